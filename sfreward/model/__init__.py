"""The SFReward region-aware reward model (see model.py)."""
from sfreward.model.config import SFRewardConfig
from sfreward.model.model import ArtifactError, SFRewardModel, sha256_file

__all__ = ["SFRewardConfig", "SFRewardModel", "ArtifactError", "sha256_file"]
