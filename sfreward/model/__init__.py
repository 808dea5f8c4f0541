"""The SFReward region-aware reward model (see model.py) and its presets (presets.py)."""
from sfreward.model.config import SFRewardConfig
from sfreward.model.model import ArtifactError, SFRewardModel, sha256_file
from sfreward.model.pretrained import CheckpointError
from sfreward.model.presets import PRESETS, get_preset

__all__ = ["SFRewardConfig", "SFRewardModel", "ArtifactError", "CheckpointError", "sha256_file",
           "PRESETS", "get_preset"]
