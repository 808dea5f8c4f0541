"""Vision backbone (transformers SigLIP / CLIP / DINOv2 encoders) and the hashing
instruction encoder (the transformers one is in text.py).

The backbone is shared by the source and the edited image and returns the patch-token grid.
The instruction encoder is a hashing bag-of-n-grams: no vocabulary file to ship or train, the
same ids in every process (crc32, not Python's salted hash), and unseen words still map to a
bucket. It is deliberately small: instructions steer which regions matter; the image pair
carries most of the signal.
"""
from __future__ import annotations

import re
import zlib

import torch
import torch.nn as nn

from sfreward.model.config import PIXEL_STATS, SFRewardConfig

_WORD = re.compile(r"[a-z0-9]+")


def _vision_classes(kind: str):
    import transformers as tf
    return {"siglip": (tf.SiglipVisionConfig, tf.SiglipVisionModel),
            "clip": (tf.CLIPVisionConfig, tf.CLIPVisionModel),
            "dinov2": (tf.Dinov2Config, tf.Dinov2Model),
            "dinov2_reg": (tf.Dinov2WithRegistersConfig, tf.Dinov2WithRegistersModel)}[kind]


class VisionBackbone(nn.Module):
    """pixels [B, 3, S, S] in [0, 1] -> patch tokens [B, g, g, D], g = floor(S / p) (CLS and
    register tokens dropped). `net` is a loaded pretrained vision model (else one is built
    from cfg.backbone_config with random weights). Position embeddings are interpolated when
    S differs from the size the network was built for."""

    LORA_TARGETS = {"siglip": ["q_proj", "k_proj", "v_proj", "out_proj"],
                    "clip": ["q_proj", "k_proj", "v_proj", "out_proj"],
                    "dinov2": ["query", "key", "value"], "dinov2_reg": ["query", "key", "value"]}

    def __init__(self, cfg: SFRewardConfig, net: nn.Module | None = None):
        super().__init__()
        if net is None:
            config_cls, model_cls = _vision_classes(cfg.backbone)
            kw = {k: v for k, v in cfg.backbone_config.items()
                  if k not in ("model_type", "transformers_version", "architectures", "_name_or_path")}
            # The network's own size (position embeddings) is backbone_config's when it has one
            # (a rebuilt pretrained model); otherwise it is built for the training size.
            kw.setdefault("image_size", cfg.image_size or 64)
            if cfg.backbone == "siglip":
                kw.setdefault("vision_use_head", False)  # pooling head unused: we need patch tokens
            net = model_cls(config_cls(**kw))
        self.net = net
        self.kind = cfg.backbone
        self.patch = int(net.config.patch_size)
        self.dim = int(net.config.hidden_size)
        self.native_size = int(net.config.image_size)
        if cfg.image_size is None:
            cfg.image_size = self.native_size
        if self.patch > cfg.image_size:
            raise ValueError(f"image_size {cfg.image_size} is smaller than the backbone's patch "
                             f"({self.patch} px): no token would fit; use image_size >= {self.patch}")
        # DINOv2 always interpolates; SigLIP and CLIP only when told to.
        self.interpolate = cfg.image_size != self.native_size and not self.kind.startswith("dinov2")
        # Remember the full config so the saved model rebuilds without the pretrained path.
        full = net.config.to_dict()
        for k in ("transformers_version", "architectures", "model_type", "_name_or_path", "dtype", "torch_dtype"):
            full.pop(k, None)
        cfg.backbone_config = full
        cfg.backbone_path = None
        mean, std = cfg.pixel_mean or PIXEL_STATS[cfg.backbone][0], cfg.pixel_std or PIXEL_STATS[cfg.backbone][1]
        cfg.pixel_mean, cfg.pixel_std = [float(v) for v in mean], [float(v) for v in std]
        self.register_buffer("mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def base(self) -> nn.Module:
        """The transformers model (under a LoRA wrapper when there is one)."""
        return self.net.get_base_model() if hasattr(self.net, "get_base_model") else self.net

    def add_lora(self, rank: int, alpha: float, dropout: float) -> None:
        """Wrap the network with peft LoRA adapters on the attention projections; the
        network's own weights are frozen (peft)."""
        from peft import LoraConfig, get_peft_model
        self.net = get_peft_model(self.net, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                                       target_modules=self.LORA_TARGETS[self.kind]))

    def merge_lora(self) -> None:
        """Fold the adapters into the weights (plain transformers model again, same outputs)."""
        if hasattr(self.net, "merge_and_unload"):
            self.net = self.net.merge_and_unload()
            for p in self.net.parameters():
                p.requires_grad_(True)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        b, _, h, w = pixels.shape
        gh, gw = h // self.patch, w // self.patch
        x = (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)
        kw = {"interpolate_pos_encoding": True} if self.interpolate else {}
        tokens = self.net(pixel_values=x, **kw).last_hidden_state
        if self.kind == "clip":
            # CLIP's post_layernorm normally only sees the CLS token; applying it to every
            # token keeps its weights in use (DDP needs every parameter to get a gradient).
            base = self.base()
            ln = getattr(base, "post_layernorm", None) or base.vision_model.post_layernorm
            tokens = ln(tokens)
        tokens = tokens[:, tokens.shape[1] - gh * gw:]  # drop CLS / register tokens
        return tokens.reshape(b, gh, gw, self.dim)


def hash_tokens(text: str, buckets: int, ngrams: int = 2) -> list[int]:
    """Lower-cased word unigrams and bigrams hashed with crc32 into [1, buckets)."""
    words = _WORD.findall(text.lower())
    grams = list(words)
    for n in range(2, ngrams + 1):
        grams += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams]


class HashingTextEncoder(nn.Module):
    """instructions: list[str] of length B -> [B, text_dim] (mean of n-gram embeddings)."""

    def __init__(self, cfg: SFRewardConfig):
        super().__init__()
        self.buckets = cfg.text_buckets
        self.bag = nn.EmbeddingBag(cfg.text_buckets, cfg.text_dim, mode="mean")
        self.proj = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.hidden))

    def encode(self, instructions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, offsets = [], []
        for text in instructions:
            offsets.append(len(ids))
            # Bucket 0 stands for "no words" so an empty instruction still has a bag.
            ids.extend(hash_tokens(text, self.buckets) or [0])
        return (torch.tensor(ids, dtype=torch.long, device=device),
                torch.tensor(offsets, dtype=torch.long, device=device))

    def forward(self, instructions: list[str], device: torch.device) -> torch.Tensor:
        ids, offsets = self.encode(instructions, device)
        return self.proj(self.bag(ids, offsets))


def freeze_unused(module: nn.Module, run: callable) -> list[str]:
    """Run one forward/backward and stop training parameters that got no gradient (pooling
    heads, DINOv2's mask token): DDP then works without find_unused_parameters."""
    module.zero_grad(set_to_none=True)
    run().sum().backward()
    frozen = []
    for name, p in module.named_parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
            frozen.append(name)
    module.zero_grad(set_to_none=True)
    return frozen
