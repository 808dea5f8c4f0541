"""Named SFReward model configurations: one registry, like segment-anything's
`sam_model_registry`.

A preset is a model configuration (SFRewardConfig fields) plus the training defaults that go
with it (TrainConfig fields such as the backbone learning-rate scale). `sfr train --preset
NAME` starts from the preset; a config file and `--set` overrides still win over it. The
preset name is recorded in the training config, hence in the registry lineage.

- tiny:  random-init SigLIP-shaped encoder at 64 px, hashed text; the unit tests' model.
- demo:  the CPU demo's model (`sfr demo`), random init at 128 px (patch 16), hashed text,
         instruction grounding features (sfreward.model.grounding) and dropout; its region
         head reads only the region's own features (`region_inputs="features"`, version 4:
         pixel, structure and damage statistics, grounding, edit completion per operation (tone
         on lightness) and at the asked colour, kind, area), the patch tokens feed the image head; carries the
         demo's training settings.
- base:  SigLIP-base class (patch 16, 768 wide, 12 layers) at 384 px; pass the local
         checkpoint folder as `model.backbone_path` (its own image size and patch win).
- large: SigLIP so400m class (patch 14, 1152 wide, 27 layers) at 384 px (27 x 27 tokens).

`base` and `large` without a `backbone_path` build the same architecture with random
weights (benchmarks); with one, the text tower of the same folder is the text encoder when it
has one (`text_encoder="auto"`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from sfreward.model.config import TINY_BACKBONE


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: dict                                  # SFRewardConfig fields
    train: dict = field(default_factory=dict)    # TrainConfig defaults implied by the preset


DEMO_BACKBONE = {**TINY_BACKBONE, "patch_size": 16}
SIGLIP_BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, patch_size=16, image_size=384)
SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                     num_attention_heads=16, patch_size=14, image_size=384)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("tiny", "random-init tiny SigLIP-shaped encoder at 64 px, hashed text (unit tests)",
           model=dict(backbone="siglip", backbone_config=dict(TINY_BACKBONE), image_size=64,
                      hidden=96, text_encoder="hash", pixel_diff=True)),
    # The demo's model and training (`sfr demo` trains with this preset). Without a language
    # model and with ~200 training samples, it reads the instruction through the weight-free
    # grounding features (model.grounding); the patch tokens and hashed text overfit that few
    # samples, so the region head reads only the region's own features (region_inputs), version 4
    # of them (structure and damage statistics, edit completion with brighten / darken read on
    # lightness, image-relative match, the share at the asked colour). Its pixel statistics
    # need the demo's full 128 px (damage such as noise halves at 64 px); patch 16 keeps the
    # encoder at 8 x 8 tokens, as cheap as 64 px at patch 8. Training at a high lr, bad regions
    # weighted x3 and the regions of each image ranked against each other (localization is about
    # them); see benchmarks/results/demo_seeds.md.
    Preset("demo", "the CPU demo model: random-init small encoder at 128 px (patch 16), hashed text, "
                   "instruction grounding features, region head on region features (version 4)",
           model=dict(backbone="siglip", backbone_config=dict(DEMO_BACKBONE), image_size=128,
                      hidden=96, text_encoder="hash", pixel_diff=True, grounding=True, dropout=0.3,
                      region_inputs="features", features_version=4),
           train=dict(max_steps=1000, batch_size=12, lr=5e-3, warmup_steps=20, rank_weight=0.5, bad_weight=3.0,
                      loc_rank_weight=1.0)),
    Preset("base", "SigLIP-base class (patch 16, 768 wide, 12 layers) at 384 px; "
                   "model.backbone_path=<local folder> for pretrained weights",
           model=dict(backbone="siglip", backbone_config=dict(SIGLIP_BASE), image_size=None,
                      hidden=256, text_encoder="auto", pixel_diff=True),
           train=dict(lr=3e-4, backbone_lr_scale=0.1, layer_lr_decay=0.8, freeze_backbone_steps=100,
                      warmup_steps=100, max_steps=3000, batch_size=16)),
    Preset("large", "SigLIP so400m class (patch 14, 1152 wide, 27 layers) at 384 px (27x27 tokens); "
                    "model.backbone_path=<local folder> for pretrained weights",
           model=dict(backbone="siglip", backbone_config=dict(SIGLIP_SO400M), image_size=None,
                      hidden=384, text_encoder="auto", pixel_diff=True),
           train=dict(lr=2e-4, backbone_lr_scale=0.05, layer_lr_decay=0.85, freeze_backbone_steps=200,
                      warmup_steps=200, max_steps=3000, batch_size=8, grad_checkpointing=True)),
)}


def get_preset(name: str) -> Preset:
    """The preset called `name` (a deep copy: callers may edit it)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def model_config_dict(preset: str | None, overrides: dict | None = None) -> dict:
    """SFRewardConfig fields of `preset` (none: the dataclass defaults) with `overrides` on top.
    A `backbone_config` override replaces the preset's whole dict (it describes one network)."""
    base = get_preset(preset).model if preset else {}
    return {**base, **(overrides or {})}
