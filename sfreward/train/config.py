"""Training configuration: a dataclass with YAML and `key=value` overrides.

`model.<field>=value` sets a field of the model config (SFRewardConfig); values are parsed
as YAML scalars (`lr=3e-4`, `amp=false`, `model.backbone_config={hidden_size: 128}`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml


@dataclass
class TrainConfig:
    data_dir: str = ""            # dataset directory (<home>/datasets/<id>) or its hf/ folder
    out_dir: str = "runs/sfreward"
    model: dict = field(default_factory=dict)   # SFRewardConfig overrides
    init_from: str | None = None  # a model directory to fine-tune (lineage: parent model)
    seed: int = 0
    batch_size: int = 8           # images per process per micro-step
    grad_accum: int = 1           # micro-steps per optimizer step
    max_steps: int = 200          # optimizer steps
    lr: float = 1e-3
    backbone_lr_scale: float = 1.0  # lr multiplier of the vision backbone (small for pretrained)
    weight_decay: float = 0.01
    warmup_steps: int = 10
    grad_clip: float = 1.0
    nll_beta: float = 0.5         # beta-NLL: weight the Gaussian NLL by var^beta (stops the
                                  # variance from absorbing errors the mean should fix)
    rank_weight: float = 0.5      # within-group pairwise ranking loss
    rank_margin: float = 2.5      # target gap (0..25) for a pair to count
    rank_scale: float = 10.0      # logistic scale on normalized score differences
    image_weight: float = 0.5     # naturalness / artifacts / overall loss weight
    label_mode: str = "region"    # 'region' or 'image' (every region gets the image's overall:
                                  # the whole-image-labels baseline)
    amp: bool = True              # bf16 autocast on CUDA (ignored on CPU)
    device: str = "auto"          # auto | cpu | cuda
    preload: bool = True          # decode the split into memory once
    ckpt_every: int = 50          # optimizer steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2
    resume: bool = True           # continue from the latest checkpoint in out_dir
    stop_after: int | None = None  # stop after this step (simulates an interruption)
    log_every: int = 10
    eval_split: str = "validation"  # evaluated at the end ('' to skip)
    num_threads: int = 0          # torch CPU threads (0 = torch default)

    def __post_init__(self) -> None:
        if self.label_mode not in ("region", "image"):
            raise ValueError(f"label_mode must be 'region' or 'image', got {self.label_mode!r}")
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown training config keys: {bad}")
        return cls(**d)


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Return a copy of cfg with `key=value` overrides applied (`model.x=...` for the model)."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        if key.startswith("model."):
            d["model"] = dict(d["model"], **{key[len("model."):]: value})
        else:
            if key not in d:
                raise ValueError(f"override {item!r}: unknown key {key!r}")
            d[key] = _coerce(key, value, d[key])
    return TrainConfig.from_dict(d)


def _coerce(key: str, value, default):
    # YAML 1.1 reads "3e-4" as a string; numbers follow the field's default type.
    if isinstance(default, float) and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key}: expected an integer, got {value!r}") from None
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A TrainConfig from an optional YAML file, then `key=value` overrides."""
    cfg = TrainConfig()
    if path:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config file {path}: expected a mapping at top level")
        base = cfg.to_dict()
        cfg = TrainConfig.from_dict({**base, **{k: _coerce(k, v, base[k]) if k in base else v
                                               for k, v in raw.items()}})
    return apply_overrides(cfg, overrides or [])
