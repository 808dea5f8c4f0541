"""The data flywheel: rollouts the reward server captured go back to annotation under a
deterministic sampling policy (`policy`, plain) whose decisions the warehouse records
(`selection`). Orchestrated by the `serving` domain in pipelines/defs/serving.py."""
from sfreward.flywheel.policy import POLICIES, Candidate, FlywheelConfig, Pick, select

__all__ = ["POLICIES", "Candidate", "FlywheelConfig", "Pick", "select"]
