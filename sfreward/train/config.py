"""Training configuration: a dataclass with YAML and `key=value` overrides.

`model.<field>=value` sets a field of the model config (SFRewardConfig); values are parsed
as YAML scalars (`lr=3e-4`, `amp=false`, `model.backbone_config={hidden_size: 128}`).

`preset` names a model preset (sfreward.model.presets): its model fields sit under `model`
overrides, and `load_config` starts from its training defaults, under the config file and
the overrides (precedence: dataclass defaults < preset < file < `key=value`).
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
    preset: str = ""              # model preset name ('' = SFRewardConfig defaults)
    model: dict = field(default_factory=dict)   # SFRewardConfig overrides (over the preset)
    init_from: str | None = None  # a model directory to fine-tune (lineage: parent model)
    seed: int = 0
    batch_size: int = 8           # images per process per micro-step
    grad_accum: int = 1           # micro-steps per optimizer step
    max_steps: int = 200          # optimizer steps
    group_batches: bool = False   # batches hold whole GRPO groups (more within-group ranking pairs)
    lr: float = 1e-3
    backbone_lr_scale: float = 1.0  # lr multiplier of the pretrained towers (vision backbone and
                                    # transformers text encoder; small for pretrained weights)
    layer_lr_decay: float = 1.0   # layer-wise lr decay: backbone layer l of L gets
                                  # decay^(L + 1 - l) (embeddings l = 0, final norm L + 1)
    freeze_backbone_steps: int = 0  # the pretrained towers stay unchanged for the first N steps
    lora_rank: int = 0            # > 0: LoRA adapters (peft) on the backbone's attention
                                  # projections; the backbone's own weights stay frozen, and
                                  # the adapters are merged into them when the model is saved
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    grad_checkpointing: bool = False  # recompute backbone activations in backward (less memory)
    weight_decay: float = 0.01
    warmup_steps: int = 10
    grad_clip: float = 1.0
    nll_beta: float = 0.5         # beta-NLL: weight the Gaussian NLL by var^beta (stops the
                                  # variance from absorbing errors the mean should fix)
    bad_weight: float = 1.0       # region-loss weight of bad regions (target min(success, preserve)
                                  # below 12.5 of 25): they are few, and localization is about them
    rank_weight: float = 0.5      # within-group pairwise ranking loss
    ema_decay: float = 0.0        # save an exponential moving average of the weights (0 = the
                                  # last step's weights); e.g. 0.99 averages ~the last 100 steps
    loc_rank_weight: float = 0.0  # pairwise ranking of regions within one image by phi (the
                                  # localization metric's question: which region went wrong)
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
        if self.bad_weight <= 0:
            raise ValueError(f"bad_weight must be > 0, got {self.bad_weight}")
        if self.label_mode not in ("region", "image"):
            raise ValueError(f"label_mode must be 'region' or 'image', got {self.label_mode!r}")
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("freeze_backbone_steps", "lora_rank", "loc_rank_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.preset:
            from sfreward.model.presets import get_preset
            get_preset(self.preset)  # unknown names fail here, naming the known ones

    def model_config(self) -> dict:
        """SFRewardConfig fields: the preset's, then `model` overrides."""
        from sfreward.model.presets import model_config_dict
        return model_config_dict(self.preset or None, self.model)

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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                preset: str | None = None) -> TrainConfig:
    """A TrainConfig from the preset's training defaults, an optional YAML file, then
    `key=value` overrides. The preset is `preset`, else a `preset=` override, else the file's."""
    raw: dict = {}
    if path:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config file {path}: expected a mapping at top level")
    name = preset
    for item in overrides or []:
        if item.startswith("preset="):
            name = name or item.split("=", 1)[1]
    name = name or raw.get("preset") or ""
    cfg = TrainConfig(preset=name)
    if name:
        from sfreward.model.presets import get_preset
        cfg = TrainConfig.from_dict({**cfg.to_dict(), **get_preset(name).train})
    if raw:
        base = cfg.to_dict()
        cfg = TrainConfig.from_dict({**base, **{k: _coerce(k, v, base[k]) if k in base else v
                                               for k, v in raw.items()}, "preset": name})
    return apply_overrides(cfg, [o for o in overrides or [] if not o.startswith("preset=")])


@dataclass
class TrainRequest:
    """What to train: the one declaration behind `sfr train`'s flags and the `sfreward_model`
    asset's run config (pipelines.configs derives both). The training settings themselves are
    TrainConfig's fields, set through the preset, the config file and the overrides."""
    dataset_id: str = field(default="", metadata={
        "help": "dataset id (<home>/datasets/<id>/hf); empty: the current dataset with an hf export"})
    preset: str = field(default="", metadata={
        "help": "model preset (tiny, demo, base, large); the config file and overrides win over it"})
    config_file: str = field(default="", metadata={"help": "YAML file with training config fields"})
    overrides: list[str] = field(default_factory=list, metadata={
        "help": "override a training field (model.<field>=... for the model)", "metavar": "KEY=VALUE"})
    nproc: int = field(default=1, metadata={"help": "processes (torchrun DDP when > 1)"})
    retrain: bool = field(default=False, metadata={
        "help": "train even if a model was already trained on this dataset with these settings"})

    def train_config(self) -> TrainConfig:
        """The TrainConfig asked for (ValueError/OSError on a bad file, preset or override)."""
        return load_config(self.config_file or None, list(self.overrides), preset=self.preset or None)
