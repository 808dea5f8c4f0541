"""Pretrained transformers checkpoints from a local folder (never downloaded).

Supported folders, told apart by config.json's `model_type`:
- vision-only: `siglip_vision_model` (SiglipVisionModel), `clip_vision_model`
  (CLIPVisionModel), `dinov2` (Dinov2Model), `dinov2_with_registers`
  (Dinov2WithRegistersModel: CLS + register tokens before the patch tokens);
- vision-language: `siglip` (SiglipModel), `clip` (CLIPModel): the vision tower is the
  backbone and the text tower (with the tokenizer of the same folder) can be the text encoder.
A text-encoder folder (`text_path`) is any transformers text model (with its tokenizer); the
text tower of a SigLIP/CLIP folder works too.

Each problem raises CheckpointError naming the folder, the problem and what to do.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

VISION_TYPES = {  # model_type -> (backbone family, vision-language folder?)
    "siglip_vision_model": ("siglip", False), "clip_vision_model": ("clip", False),
    "dinov2": ("dinov2", False), "dinov2_with_registers": ("dinov2_reg", False),
    "siglip": ("siglip", True), "clip": ("clip", True),
}
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json", "vocab.txt")
_DROP = ("transformers_version", "architectures", "_name_or_path", "model_type", "dtype", "torch_dtype")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CheckpointError(ValueError):
    """A pretrained folder cannot be used; the message names the folder and the problem."""


@dataclass
class Checkpoint:
    path: Path
    model_type: str
    family: str | None          # backbone family, None for a text-only folder
    full: bool                  # a vision-language folder (SiglipModel / CLIPModel)
    config: dict                # the folder's config.json

    def weight_files(self) -> list[Path]:
        """The weight files (shards of an index included)."""
        for name in WEIGHT_NAMES:
            p = self.path / name
            if p.is_file():
                if name.endswith(".index.json"):
                    shards = sorted(set(json.loads(p.read_text()).get("weight_map", {}).values()))
                    return [p] + [self.path / s for s in shards]
                return [p]
        return []

    def source(self) -> dict:
        """Lineage record: folder, model type and sha256 of every weight file."""
        return {"path": str(self.path.resolve()), "model_type": self.model_type,
                "weights_sha256": {f.name: sha256_file(f) for f in self.weight_files()}}

    def pixel_stats(self) -> tuple[list[float], list[float]] | None:
        """image_mean / image_std of preprocessor_config.json (the only fields used: the
        processor's resize and crop are not applied, since a crop would misalign region masks)."""
        p = self.path / "preprocessor_config.json"
        if not p.is_file():
            return None
        try:
            d = json.loads(p.read_text())
            mean, std = [float(v) for v in d["image_mean"]], [float(v) for v in d["image_std"]]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"pretrained folder {self.path}: preprocessor_config.json has no usable "
                                  f"image_mean/image_std ({e}); fix or remove the file") from e
        if len(mean) != 3 or len(std) != 3:
            raise CheckpointError(f"pretrained folder {self.path}: preprocessor_config.json image_mean/"
                                  f"image_std must have 3 values, got {mean} / {std}")
        return mean, std

    def has_tokenizer(self) -> bool:
        return any((self.path / n).is_file() for n in TOKENIZER_NAMES)


def inspect(path: str | Path, role: str = "backbone") -> Checkpoint:
    """Check a folder (config.json, model type, weights) without loading the weights.
    role: 'backbone' (a vision model) or 'text' (any transformers model with a tokenizer)."""
    p = Path(path).expanduser()
    what = "backbone_path" if role == "backbone" else "text_path"
    if not p.is_dir():
        raise CheckpointError(f"{what} {str(path)!r}: no such folder (give a local folder saved by "
                              "transformers' save_pretrained; nothing is downloaded)")
    cfg_file = p / "config.json"
    try:
        config = json.loads(cfg_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"pretrained folder {p}: no config.json (is it a transformers "
                              "save_pretrained folder?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"pretrained folder {p}: config.json is not valid JSON ({e})") from e
    model_type = config.get("model_type", "")
    family, full = VISION_TYPES.get(model_type, (None, False))
    if role == "backbone" and family is None:
        raise CheckpointError(
            f"pretrained folder {p}: model_type {model_type!r} is not a supported vision backbone; "
            f"use a SigLIP, CLIP or DINOv2 folder (model_type one of {sorted(VISION_TYPES)})")
    ck = Checkpoint(p, model_type, family, full, config)
    if not ck.weight_files():
        raise CheckpointError(f"pretrained folder {p}: no weights file (expected one of "
                              f"{', '.join(WEIGHT_NAMES)}); copy the checkpoint's weights into it")
    missing = [f.name for f in ck.weight_files() if not f.is_file()]
    if missing:
        raise CheckpointError(f"pretrained folder {p}: weight shards {missing} named by the index are missing")
    if role == "backbone":
        vc = config.get("vision_config", {}) if full else config
        size, patch = vc.get("image_size", 224), vc.get("patch_size", 16)
        if patch > size:
            raise CheckpointError(f"pretrained folder {p}: patch_size {patch} is larger than image_size "
                                  f"{size}; the checkpoint's config.json is inconsistent")
    return ck


def config_dict(cfg) -> tuple[str, dict]:
    """(model_type, constructor kwargs) of a transformers config, without bookkeeping keys."""
    d = cfg.to_dict()
    return d.get("model_type", ""), {k: v for k, v in d.items() if k not in _DROP}


def load_towers(ck: Checkpoint, want_text: bool):
    """(vision model or None, text model or None) of a checkpoint folder. Vision-language
    folders load once; their towers are the vision-only / text-only transformers classes."""
    import transformers as tf
    try:
        if ck.full:
            full_cls = {"siglip": tf.SiglipModel, "clip": tf.CLIPModel}[ck.model_type]
            m = full_cls.from_pretrained(str(ck.path), local_files_only=True)
            return m.vision_model, (m.text_model if want_text else None)
        if ck.family is not None:
            cls = {"siglip": tf.SiglipVisionModel, "clip": tf.CLIPVisionModel, "dinov2": tf.Dinov2Model,
                   "dinov2_reg": tf.Dinov2WithRegistersModel}[ck.family]
            return cls.from_pretrained(str(ck.path), local_files_only=True), None
        m = tf.AutoModel.from_pretrained(str(ck.path), local_files_only=True)
        return None, getattr(m, "text_model", m)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"pretrained folder {ck.path}: transformers cannot load its weights ({e})") from e


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"tokenizer folder {path}: cannot load a tokenizer ({e})") from e


def build_text_net(text_config: dict):
    """A transformers text encoder (random weights) from a config dict with `model_type`."""
    import transformers as tf
    kw = {k: v for k, v in text_config.items() if k not in _DROP}
    mt = text_config["model_type"]
    if mt == "siglip_text_model":
        return tf.SiglipTextModel(tf.SiglipTextConfig(**kw))
    if mt == "clip_text_model":
        return tf.CLIPTextModel(tf.CLIPTextConfig(**kw))
    return tf.AutoModel.from_config(tf.AutoConfig.for_model(mt, **kw))
