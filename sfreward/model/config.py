"""Configuration of the SFReward model (saved as config.json beside the weights)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# Tiny default backbones: fast enough for CPU tests; real runs pass a larger config or a
# local pretrained directory (`backbone_path`).
TINY_BACKBONE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, patch_size=8)

# Pixel normalization each backbone family was trained with.
PIXEL_STATS = {
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "dinov2_reg": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # DINOv2 with register tokens
}


TEXT_ENCODERS = ("hash", "auto", "checkpoint", "transformer")
REGION_INPUTS = ("all", "features")


@dataclass
class SFRewardConfig:
    """Architecture of one SFReward model.

    backbone: 'siglip' | 'clip' | 'dinov2' | 'dinov2_reg' (transformers vision encoders;
        'dinov2_reg' = DINOv2 with register tokens).
    backbone_config: keyword arguments of the transformers vision config (hidden_size,
        num_hidden_layers, patch_size, ...). After construction it holds the full config, so a
        saved model rebuilds without `backbone_path`.
    backbone_path: local directory of a pretrained transformers model to initialise the
        backbone from (read once at construction; never downloaded).
        The family is read from the folder's config.json when one is given.
    image_size: square input side S in pixels; inputs are resized to it (never cropped). None:
        the checkpoint's own size (else backbone_config's image_size, else 64). Filled in at
        construction. Position embeddings are interpolated when S differs from the
        checkpoint's; the token grid is floor(S / patch) per side.
    hidden: width of token/region features and heads.
    text_encoder: 'hash' (weight-free hashed bag of n-grams), 'auto' (the text tower of the
        backbone folder when it has one, else 'hash'), 'checkpoint' (that text tower; an error
        without one), or 'transformer' (set at construction: a transformers text encoder rebuilt
        from text_config, tokenizer saved beside the weights).
    text_path: a local transformers text-encoder folder (model + tokenizer); wins over
        text_encoder.
    text_config: full config of the transformers text encoder (filled in at construction).
    text_max_length: tokens per instruction for the transformers text encoder.
    text_buckets, text_dim: hashing text encoder (see backbone.HashingTextEncoder).
    pixel_mean, pixel_std: per-channel normalization; None: the checkpoint folder's
        preprocessor_config.json (only mean/std are read), else the family's (PIXEL_STATS).
    backbone_source, text_source: lineage of pretrained weights (folder, model type, sha256 of
        the weight files), filled in at construction.
    pixel_diff: add per-patch pixel-difference statistics (|edited - source| and signed mean
        per channel) to the token features: a cheap low-level change signal.
    grounding: add the weight-free instruction grounding features of each region
        (sfreward.model.grounding: named place, named colours, tone operations against the
        region's pixels and centroid); for models without a language model (the demo's).
    region_inputs: what the region head reads. 'all': pooled patch tokens, image mean, text,
        area (+ the direct features with grounding). 'features' (needs grounding): only the
        region's own features (pixel statistics, grounding features, kind, area); the patch
        tokens and text then feed the image head alone. For a few hundred training samples,
        where the token path overfits (the demo's).
    features_version: the region's direct features. 1: pixel statistics (region_pixel_stats) and
        the grounding features (models saved before version 2 have exactly these). 2: adds
        structure statistics on luma (standard deviations, their log ratio, correlation of edited
        with source and of their high-frequency parts: how badly a region was damaged, not only
        that it changed), the completion of the asked change, and how well the region matches
        the instruction's description against the other regions of its image
        (sfreward.model.grounding). 3: adds how much damage (a finer contrast ratio, blocking:
        sfreward.model.regionstats) and whether the asked change was made (completion per
        operation, share of the region at the asked hue, whether it reads as the asked colour).
        4: version 3 with brighten / darken read on lightness (luma) instead of HSV value.
    """

    backbone: str = "siglip"
    backbone_config: dict = field(default_factory=lambda: dict(TINY_BACKBONE))
    backbone_path: str | None = None
    image_size: int | None = None
    hidden: int = 96
    text_encoder: str = "auto"
    text_path: str | None = None
    text_config: dict | None = None
    text_max_length: int = 64
    text_buckets: int = 4096
    text_dim: int = 64
    pixel_diff: bool = True
    grounding: bool = False
    dropout: float = 0.0
    region_inputs: str = "all"
    features_version: int = 1
    pixel_mean: list[float] | None = None
    pixel_std: list[float] | None = None
    backbone_source: dict | None = None
    text_source: dict | None = None

    def __post_init__(self) -> None:
        if self.backbone not in PIXEL_STATS:
            raise ValueError(f"backbone must be one of {sorted(PIXEL_STATS)}, got {self.backbone!r}")
        if (self.image_size is not None and self.image_size <= 0) or self.hidden <= 0:
            raise ValueError("image_size and hidden must be positive")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {list(TEXT_ENCODERS)}, got {self.text_encoder!r}")
        if self.region_inputs not in REGION_INPUTS:
            raise ValueError(f"region_inputs must be one of {list(REGION_INPUTS)}, got {self.region_inputs!r}")
        if self.features_version not in (1, 2, 3, 4):
            raise ValueError(f"features_version must be 1, 2, 3 or 4, got {self.features_version!r}")
        if self.region_inputs == "features" and not self.grounding:
            raise ValueError("region_inputs='features' needs grounding=true (the grounding features are "
                             "the head's only view of the instruction)")
        for name in ("pixel_mean", "pixel_std"):
            v = getattr(self, name)
            if v is not None and (len(v) != 3 or (name == "pixel_std" and min(v) <= 0)):
                raise ValueError(f"{name} must be 3 numbers (std > 0), got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SFRewardConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SFRewardConfig keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "SFRewardConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
