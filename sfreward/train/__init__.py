"""SFReward training: `TrainConfig`, `train()`, `train_and_register()` and
`python -m sfreward.train`."""
from sfreward.train.config import TrainConfig, apply_overrides, load_config


def train_and_register(ws, dataset_id: str, cfg: TrainConfig, runner=None, eval_split: str = "test",
                       reuse: bool = False) -> str:
    """See sfreward.train.api.train_and_register (imported lazily: torch is heavy)."""
    from sfreward.train.api import train_and_register as impl
    return impl(ws, dataset_id, cfg, runner=runner, eval_split=eval_split, reuse=reuse)


__all__ = ["TrainConfig", "apply_overrides", "load_config", "train_and_register"]
