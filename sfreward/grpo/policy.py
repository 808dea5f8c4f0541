"""A small image-editing policy that runs on CPU: a diffusers UNet2DModel trained by flow
matching in pixel space, conditioned on the source image (concatenated to the noisy image on
channels, with two coordinate channels so that words like "upper left" can be grounded) and on
the instruction (hashed bag of words -> UNet class embedding). It is never given a region mask:
it must find the region from the words and the picture.

`pretrain_policy(cfg, pairs)` fits it on (source, instruction, ideal edit) pairs from
`sfreward.synthetic`, deliberately briefly so that RL has headroom; `cached_policy` keeps the
result under a content hash of the config, the data and this file.

Images: float [B, 3, H, W] in [0, 1] outside. The flow runs on the edit residual
x0 = 2 (edited - source) ("latent" = pixels, no VAE; an untouched pixel is 0), so keeping the
rest of the picture is easy and finding and doing the edit is what is learned; `to_image`
maps a sample back. One credit token is `patch x patch` pixels.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sfreward.grpo.adapters import UNetAdapter

log = logging.getLogger(__name__)


@dataclass
class PolicyConfig:
    image_size: int = 32
    patch: int = 4                  # pixels per credit token side (8 x 8 tokens at 32 px)
    channels: tuple[int, ...] = (32, 64)
    text_buckets: int = 256
    pretrain_steps: int = 300       # deliberately few: an under-trained editor leaves RL headroom
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0

    def validate(self) -> None:
        if self.image_size % self.patch or self.image_size % (2 ** (len(self.channels) - 1)):
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch {self.patch} "
                             f"and of the UNet's downsampling")


def hash_words(texts: list[str], buckets: int) -> Tensor:
    """Multi-hot bag of words [B, buckets] (crc32 of each lower-cased word): deterministic and
    free of any download."""
    out = torch.zeros(len(texts), buckets)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z]+", t.lower()):
            out[i, zlib.crc32(w.encode()) % buckets] = 1.0
    return out


class EditPolicy(torch.nn.Module):
    """Velocity model v(x_sigma, sigma | source, instruction); satisfies `FlowDenoiser`."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        from diffusers import UNet2DModel

        cfg.validate()
        self.cfg = cfg
        n = len(cfg.channels)
        self.unet = UNet2DModel(sample_size=cfg.image_size, in_channels=3 + 3 + 2, out_channels=3,
                                block_out_channels=tuple(cfg.channels), layers_per_block=1,
                                down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                                norm_num_groups=8, class_embed_type="identity")
        self.text_proj = torch.nn.Linear(cfg.text_buckets, cfg.channels[0] * 4)
        self._adapter = UNetAdapter(self.unet, latent_channels=3, patch=cfg.patch)
        self.patch = cfg.patch
        self.latent_channels = 3

    @property
    def module(self) -> torch.nn.Module:
        return self

    def condition(self, sources: Tensor, instructions: list[str]) -> dict[str, Any]:
        """cond dict for sources [B, 3, H, W] in [0, 1] and B instructions."""
        b, _, h, w = sources.shape
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        coords = torch.stack([xx, yy])[None].expand(b, 2, h, w)
        return {"source": torch.cat([sources * 2 - 1, coords], 1),
                "text": hash_words(instructions, self.cfg.text_buckets)}

    @staticmethod
    def to_latent(edited: Tensor, sources: Tensor) -> Tensor:
        return 2 * (edited - sources)

    @staticmethod
    def to_image(x: Tensor, sources: Tensor) -> Tensor:
        """Sampled residual [B, 3, H, W] -> edited image in [0, 1]."""
        return (sources + x / 2).clamp(0, 1)

    def velocity(self, x: Tensor, sigma: Tensor, cond: dict[str, Any]) -> Tensor:
        c = dict(cond, class_labels=self.text_proj(cond["text"]))
        return self._adapter.velocity(x, sigma, c)

    forward = velocity


def flow_matching_loss(policy: EditPolicy, src: Tensor, target: Tensor, instr: list[str],
                       gen: torch.Generator) -> Tensor:
    """Rectified-flow loss: x_s = (1 - s) x0 + s eps, v* = eps - x0; images in [0, 1]."""
    x0 = policy.to_latent(target, src)
    eps = torch.randn(x0.shape, generator=gen)
    s = torch.rand(x0.shape[0], generator=gen)
    xs = (1 - s)[:, None, None, None] * x0 + s[:, None, None, None] * eps
    v = policy.velocity(xs, s, policy.condition(src, instr))
    return torch.nn.functional.mse_loss(v, eps - x0)


def pretrain_policy(cfg: PolicyConfig, pairs: dict[str, Any]) -> EditPolicy:
    """Fit on pairs {"source" [M, 3, H, W], "target" [M, 3, H, W], "instruction" [M]}."""
    torch.manual_seed(cfg.seed)
    policy = EditPolicy(cfg)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    m = pairs["source"].shape[0]
    for step in range(cfg.pretrain_steps):
        idx = torch.randint(0, m, (cfg.batch_size,), generator=gen)
        loss = flow_matching_loss(policy, pairs["source"][idx], pairs["target"][idx],
                                  [pairs["instruction"][i] for i in idx.tolist()], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log.info("policy pretraining step %d: flow-matching loss %.4f", step, float(loss.detach()))
    return policy.eval()


def content_hash(cfg: PolicyConfig, pairs: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(Path(__file__).read_bytes())
    h.update(pairs["source"].numpy().tobytes())
    h.update(pairs["target"].numpy().tobytes())
    h.update("\n".join(pairs["instruction"]).encode())
    return h.hexdigest()[:16]


def cached_policy(cfg: PolicyConfig, pairs: dict[str, Any], cache_dir: str | Path) -> tuple[EditPolicy, str, bool]:
    """(policy, content hash, was_cached): pretrained once per (config, data, code) content."""
    key = content_hash(cfg, pairs)
    path = Path(cache_dir) / f"edit-policy-{key}.pt"
    if path.is_file():
        policy = EditPolicy(cfg)
        policy.load_state_dict(torch.load(path, weights_only=True))
        return policy.eval(), key, True
    policy = pretrain_policy(cfg, pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(policy.state_dict(), tmp)
    tmp.rename(path)
    return policy, key, False


def to_tensor(images: list[np.ndarray]) -> Tensor:
    """float HWC [0, 1] arrays -> [B, 3, H, W]."""
    return torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
