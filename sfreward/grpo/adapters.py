"""Denoiser adapters: one interface over diffusers flow-matching models so the sampler and the
trainer never see a model's own calling convention.

Every adapter maps an unpacked latent `x [B, C, H, W]` and noise level `sigma [B]` (1 = pure
noise, 0 = data) plus a conditioning dict to the velocity `v [B, C, H, W]` (flow matching:
x_sigma = (1 - sigma) x0 + sigma eps, v = eps - x0). `patch` is the side, in latent pixels, of one
transformer token; the per-token log-probs of `sfreward.grpo.sde` and the region coverage of
`sfreward.credit.token_coverage` use that grid.

Conditioning keys (all optional unless the model needs them):
    source:  [B, Cs, H, W] condition latents concatenated to x on channels (editing), when the
             model's in_channels exceed the latent's channels
    prompt_embeds [B, L, D], pooled [B, P]: text conditioning of SD3 / FLUX transformers
    class_labels [B, E]: UNet2DModel's class embedding (class_embed_type="identity")
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class FlowDenoiser(Protocol):
    """What the sampler and trainer need of a model."""

    patch: int                  # latent pixels per token side
    latent_channels: int        # C of x (the sampled latent; condition channels excluded)
    module: torch.nn.Module     # what is optimized (possibly a peft-wrapped model)

    def velocity(self, x: Tensor, sigma: Tensor, cond: dict[str, Any]) -> Tensor:
        """x [B, C, H, W], sigma [B] in [0, 1] -> v [B, C, H, W]."""
        ...


def _with_source(x: Tensor, cond: dict[str, Any], in_channels: int) -> Tensor:
    if in_channels == x.shape[1]:
        return x
    src = cond.get("source")
    if src is None or src.shape[1] + x.shape[1] != in_channels:
        raise ValueError(f"model expects {in_channels} input channels; x has {x.shape[1]} and "
                         f"cond['source'] has {None if src is None else src.shape[1]}")
    return torch.cat([x, src.to(x.dtype)], 1)


class SD3Adapter:
    """diffusers SD3Transformer2DModel (timestep = 1000 sigma, as StableDiffusion3Pipeline)."""

    def __init__(self, model: torch.nn.Module, latent_channels: int | None = None):
        self.module = model
        cfg = model.config
        self.patch = int(cfg.patch_size)
        self.in_channels = int(cfg.in_channels)
        self.latent_channels = int(latent_channels or cfg.out_channels or cfg.in_channels)

    def velocity(self, x: Tensor, sigma: Tensor, cond: dict[str, Any]) -> Tensor:
        h = _with_source(x, cond, self.in_channels)
        out = self.module(hidden_states=h, encoder_hidden_states=cond["prompt_embeds"],
                          pooled_projections=cond["pooled"], timestep=sigma * 1000, return_dict=False)[0]
        return out


class FluxAdapter:
    """diffusers FluxTransformer2DModel on 2x2-packed latents (FluxPipeline's `_pack_latents`;
    timestep = sigma, guidance from cond["guidance"] when the model embeds it). Condition
    latents (Kontext-style) are packed and appended after the target tokens, then cropped off."""

    def __init__(self, model: torch.nn.Module, latent_channels: int):
        self.module = model
        self.patch = 2
        self.latent_channels = latent_channels
        self.in_channels = int(model.config.in_channels)

    @staticmethod
    def pack(x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, (H/2)(W/2), 4C], row-major tokens."""
        b, c, h, w = x.shape
        return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)

    @staticmethod
    def unpack(t: Tensor, h: int, w: int) -> Tensor:
        b, n, c4 = t.shape
        c = c4 // 4
        return t.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    @staticmethod
    def ids(h: int, w: int, offset: float = 0.0, device: Any = None) -> Tensor:
        i = torch.zeros(h // 2, w // 2, 3, device=device)
        i[..., 0] = offset
        i[..., 1] += torch.arange(h // 2, device=device)[:, None]
        i[..., 2] += torch.arange(w // 2, device=device)[None, :]
        return i.reshape(-1, 3)

    def velocity(self, x: Tensor, sigma: Tensor, cond: dict[str, Any]) -> Tensor:
        b, c, h, w = x.shape
        tokens, ids = self.pack(x), self.ids(h, w, device=x.device)
        n = tokens.shape[1]
        if cond.get("source") is not None:
            tokens = torch.cat([tokens, self.pack(cond["source"].to(x.dtype))], 1)
            ids = torch.cat([ids, self.ids(h, w, 1.0, x.device)], 0)
        txt = cond["prompt_embeds"]
        kw = {}
        if getattr(self.module.config, "guidance_embeds", False):
            kw["guidance"] = torch.as_tensor(cond.get("guidance", 1.0), device=x.device).expand(b)
        out = self.module(hidden_states=tokens, encoder_hidden_states=txt, pooled_projections=cond["pooled"],
                          timestep=sigma, img_ids=ids, txt_ids=torch.zeros(txt.shape[1], 3, device=x.device),
                          return_dict=False, **kw)[0]
        return self.unpack(out[:, :n], h, w)


class UNetAdapter:
    """diffusers UNet2DModel; tokens are `patch x patch` latent pixels (a UNet has no patchify;
    the token grid is the credit grid chosen by the caller). timestep = 1000 sigma."""

    def __init__(self, model: torch.nn.Module, latent_channels: int, patch: int):
        self.module = model
        self.patch = patch
        self.latent_channels = latent_channels
        self.in_channels = int(model.config.in_channels)

    def velocity(self, x: Tensor, sigma: Tensor, cond: dict[str, Any]) -> Tensor:
        h = _with_source(x, cond, self.in_channels)
        return self.module(h, sigma * 1000, class_labels=cond.get("class_labels"), return_dict=False)[0]


def add_lora(model: torch.nn.Module, rank: int = 8, alpha: int | None = None,
             target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")) -> torch.nn.Module:
    """Wrap a diffusers model with peft LoRA on its attention projections (what Flow-GRPO trains
    on SD3/FLUX). Only the LoRA weights require grad; `disable_adapter()` gives the reference
    policy for the KL term without a second copy of the model."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                     target_modules=list(target_modules))
    return get_peft_model(model, cfg)
