"""Spatial credit assignment for Flow-GRPO-style trainers (docs/spatial-credit.md).

Pure torch, batched, no Python loops over pixels, tokens, regions or rollouts.

Shapes (G rollouts per group, K regions, background included when the caller has one,
H x W pixels, h x w latent tokens with N = h * w, T sampler timesteps, B groups):

- `region_advantages(rewards [.., G, K], valid [.., G, K])` -> `RegionAdvantages` with
  `advantages`, `mask`, `fallback`, each `[.., G, K]`.
- `token_coverage(masks [.., K, H, W])` -> `[.., K(+1), h, w]` float, fraction of each
  token's pixel block covered by each region (+ a background channel, last).
- `token_advantages(advantages [.., G, K], coverage [.., K, h, w])` -> `[.., G, N]`,
  tokens in row-major order: pixel (x, y) -> token (y // t) * w + x // t, the order of
  FLUX.1/Kontext, FLUX.2-klein and OmniGen2 packed latents (8x VAE + 2x2 patchify, t = 16).
- `region_weighted_loss(logp_new, logp_old [G, N] | [G, T, N], coverage, advantages [G, K],
  clip_eps, region_weights)` -> scalar: the region-weighted clipped GRPO objective.
- `flow_grpo_loss(logp_new, logp_old [G] | [G, T], advantages [G], clip_eps)` -> scalar:
  Flow-GRPO's own policy loss, the reference the region loss reduces to with one region.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

STD_MODES = ("group", "global")
REMAINDER_MODES = ("crop", "pad")
WEIGHT_MODES = ("area", "uniform")


class RegionAdvantages(NamedTuple):
    """Output of `region_advantages`; all fields `[.., G, K]`.

    advantages: float, 0.0 wherever `mask` is False (NaN-free; 0 there means "none", not a
        zero reward: consumers must honour `mask`).
    mask: bool, True where an advantage exists (valid entry, and for zero-spread regions a
        valid whole-image advantage).
    fallback: bool, True where the region's group spread was ~0 and the entry took the
        rollout's whole-image advantage instead.
    """

    advantages: Tensor
    mask: Tensor
    fallback: Tensor


# --------------------------------------------------------------------------- advantages
def _float(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dtype == torch.bool or not (x.is_floating_point() or x.dtype in _INT_DTYPES):
        raise TypeError(f"{name}: expected a real-valued tensor, got dtype {x.dtype}")
    return x if x.is_floating_point() else x.to(torch.float32)


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _normalize(r: Tensor, v: Tensor, std: str, eps: float, clip: float | None):
    """Group-normalize `r [.., G, K]` over G using only entries where `v` is True.

    Returns (advantages [.., G, K] with 0 where invalid, group std [.., 1, K]).
    Population std (ddof=0) like Flow-GRPO's np.std; "global" is the std of all valid
    entries of the whole tensor (every group, every column), computed on the raw rewards
    as Flow-GRPO's global_std does.
    """
    vf = v.to(r.dtype)
    r0 = torch.where(v, r, 0.0)  # NaN-safe: invalid never enter sums
    n = vf.sum(-2, keepdim=True)
    mean = r0.sum(-2, keepdim=True) / n.clamp_min(1)
    dev = torch.where(v, r - mean, 0.0)
    group_std = ((dev * dev).sum(-2, keepdim=True) / n.clamp_min(1)).sqrt()
    if std == "group":
        scale = group_std
    else:
        n_all = vf.sum().clamp_min(1)
        mean_all = r0.sum() / n_all
        dev_all = torch.where(v, r - mean_all, 0.0)
        scale = ((dev_all * dev_all).sum() / n_all).sqrt()
    adv = dev / (scale + eps)
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    return adv, group_std


def region_advantages(
    rewards: Tensor,
    valid: Tensor | None = None,
    std: str = "group",
    clip: float | None = 5.0,
    *,
    image_rewards: Tensor | None = None,
    eps: float = 1e-4,
    spread_tol: float = 1e-6,
) -> RegionAdvantages:
    """Group-relative advantages per region.

    `A[.., i, r] = clip((R[.., i, r] - mean_j R[.., j, r]) / (s + eps), -clip, clip)`, means
    over the valid rollouts j of the same group (axis -2).

    Args:
        rewards: `[G, K]` for one group or `[B, G, K]` (any leading dims) for many; region
            rewards, e.g. `R_r` in [0, 1].
        valid: bool, same shape; default all True. Entries that are invalid or non-finite
            are left out of every statistic and get no advantage (`mask` False).
        std: "group": s = the region's own group std; "global": s = one std over every
            valid reward of the input (all groups, all regions): Flow-GRPO's global std.
        clip: advantage clip (Flow-GRPO: 5); None disables it.
        image_rewards: `[.., G]` whole-image reward per rollout (e.g. the overall score);
            default: the mean of the rollout's valid region rewards. Non-finite = invalid.
        eps: added to the std (Flow-GRPO: 1e-4).
        spread_tol: a region whose group std (over its valid entries) is <= this has zero
            spread; its valid entries take the rollout's whole-image advantage (the image
            rewards normalized over the group the same way). A region with a single valid
            entry has zero spread. A group whose image rewards have zero spread gets
            advantage 0 there, as Flow-GRPO does.

    Returns:
        RegionAdvantages(advantages, mask, fallback), each `[.., G, K]`.
    """
    if std not in STD_MODES:
        raise ValueError(f"std: expected one of {STD_MODES}, got {std!r}")
    r = _float(rewards, "rewards")
    if r.ndim < 2:
        raise ValueError(f"rewards: expected [.., G, K], got shape {tuple(r.shape)}")
    if valid is None:
        v = torch.ones(r.shape, dtype=torch.bool, device=r.device)
    else:
        v = torch.as_tensor(valid, device=r.device)
        if v.shape != r.shape:
            raise ValueError(f"valid: shape {tuple(v.shape)} does not match rewards {tuple(r.shape)}")
        if v.dtype != torch.bool:
            raise TypeError(f"valid: expected a bool tensor, got dtype {v.dtype}")
    v = v & torch.isfinite(r)

    if image_rewards is None:
        n = v.sum(-1)
        img = torch.where(v, r, 0.0).sum(-1) / n.clamp_min(1)
        img_v = n > 0
    else:
        img = _float(image_rewards, "image_rewards").to(device=r.device, dtype=r.dtype)
        if img.shape != r.shape[:-1]:
            raise ValueError(
                f"image_rewards: expected shape {tuple(r.shape[:-1])} (rewards without K), "
                f"got {tuple(img.shape)}"
            )
        img_v = torch.isfinite(img)

    adv, group_std = _normalize(r, v, std, eps, clip)
    img_adv, _ = _normalize(img.unsqueeze(-1), img_v.unsqueeze(-1), std, eps, clip)  # [.., G, 1]

    zero = (group_std <= spread_tol).expand_as(v)
    fallback = zero & v & img_v.unsqueeze(-1)
    mask = v & (~zero | img_v.unsqueeze(-1))
    adv = torch.where(zero, img_adv.expand_as(adv), adv)
    adv = torch.where(mask, adv, 0.0)
    return RegionAdvantages(adv, mask, fallback)


# --------------------------------------------------------------------------- coverage
def token_coverage(
    masks: Tensor,
    token_px: int = 16,
    background: bool = False,
    remainder: str = "crop",
) -> Tensor:
    """Fraction of each latent token's `token_px x token_px` pixel block covered by each region.

    Args:
        masks: `[.., K, H, W]` bool (or integer 0/1) region masks on the pixel grid.
        token_px: pixels per token side (16 for an 8x VAE with 2x2 patchify).
        background: append a channel for the pixels no region covers (1 - union, computed
            per pixel, so overlapping regions do not make it negative).
        remainder: rule when H or W is not a multiple of `token_px`:
            "crop": drop the last `H % t` rows / `W % t` columns, giving `[h, w] =
                [H // t, W // t]`: the token grid of an image cropped to a multiple of t
                (what a pipeline that crops, rather than resizes, to the latent grid sees).
            "pad": keep partial tokens, `[ceil(H / t), ceil(W / t)]`; a partial token's
                coverage is the fraction of its real pixels covered (padding is ignored).

    Returns:
        float32 `[.., K (+1), h, w]` in [0, 1].
    """
    m = torch.as_tensor(masks)
    if m.ndim < 3:
        raise ValueError(f"masks: expected [.., K, H, W], got shape {tuple(m.shape)}")
    if m.dtype != torch.bool:
        if m.is_floating_point() or m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            raise TypeError(f"masks: expected bool (or integer 0/1), got dtype {m.dtype}")
        m = m != 0
    if not isinstance(token_px, int) or token_px < 1:
        raise ValueError(f"token_px: expected a positive int, got {token_px!r}")
    if remainder not in REMAINDER_MODES:
        raise ValueError(f"remainder: expected one of {REMAINDER_MODES}, got {remainder!r}")
    t = token_px
    H, W = m.shape[-2:]
    if remainder == "crop":
        h, w = H // t, W // t
        if h == 0 or w == 0:
            raise ValueError(f"masks: {H}x{W} pixels is smaller than one {t}x{t} token (remainder='crop')")
        u = m.view(torch.uint8)[..., : h * t, : w * t]
        counts = None
    else:
        h, w = -(-H // t), -(-W // t)
        if h == 0 or w == 0:
            raise ValueError(f"masks: empty pixel grid {H}x{W}")
        u = torch.zeros(*m.shape[:-2], h * t, w * t, dtype=torch.uint8, device=m.device)
        u[..., :H, :W] = m.view(torch.uint8)
        rows = torch.clamp(H - torch.arange(h, device=m.device) * t, max=t).to(torch.float32)
        cols = torch.clamp(W - torch.arange(w, device=m.device) * t, max=t).to(torch.float32)
        counts = rows[:, None] * cols[None, :]
    sums = _block_sums(u, t)
    if background:
        # Background = the token's real pixels minus those any region covers. amax of the 0/1
        # bytes is the per-pixel union (much faster than bool.any here); padding pixels are in
        # no region, so "real pixels - union" also handles remainder="pad" without a special case.
        real = t * t if counts is None else counts.to(torch.int64)
        if u.shape[-3] == 0:  # no regions: everything is background
            union = torch.zeros(*u.shape[:-3], 1, *sums.shape[-2:], dtype=sums.dtype, device=u.device)
        else:
            union = _block_sums(u.amax(dim=-3, keepdim=True), t)
        sums = torch.cat([sums, real - union], dim=-3)
    sums = sums.to(torch.float32)
    return sums / (t * t) if counts is None else sums / counts


def _block_sums(u: Tensor, t: int) -> Tensor:
    """Sum a 0/1 uint8 tensor `[.., h * t, w * t]` over t x t blocks -> integer `[.., h, w]`."""
    *lead, Ht, Wt = u.shape
    h, w = Ht // t, Wt // t
    if t % 8 == 0 and t <= 16:
        # SWAR: 8 pixels per int64 lane. Summing the t rows of a token keeps every byte <= t
        # (no carry between bytes); multiplying by 0x0101...01 adds a lane's 8 bytes into its top
        # byte (<= 8 * t <= 128, fits), and the lanes of a token are then summed. Several times
        # faster on CPU than pooling a float copy (benchmarks/results/credit.md).
        u = u.contiguous()
        if u.storage_offset() % 8 == 0:
            x = u.view(torch.int64).reshape(*lead, h, t, Wt // 8).sum(-2)
            x = ((x * 0x0101010101010101) >> 56) & 0xFF   # int64 wraps; & drops the sign extension
            return x.reshape(*lead, h, w, t // 8).sum(-1)
    s = u.reshape(*lead, Ht, w, t).sum(-1, dtype=torch.int32)
    return s.reshape(*lead, h, t, w).sum(-2)


# --------------------------------------------------------------------------- token advantages
def token_advantages(advantages: Tensor, coverage: Tensor, mask: Tensor | None = None) -> Tensor:
    """Dense per-token advantages: `A_tok[i, n] = sum_r m[r, n] A[i, r] / sum_r m[r, n]`.

    Args:
        advantages: `[.., G, K]`.
        coverage: `[.., K, h, w]` (from `token_coverage`; leading dims broadcast against
            advantages', e.g. `[B, K, h, w]` with `[B, G, K]`), or 2-D `[K, N]` already
            flat. (A flat batched coverage `[B, K, N]` is passed as `[B, K, 1, N]`.)
        mask: optional bool `[.., G, K]` (`RegionAdvantages.mask`): regions without an
            advantage for rollout i drop out of the weighted mean for that rollout.

    Returns:
        `[.., G, N]` in row-major token order (n = y * w + x). Tokens no (unmasked) region
        covers get 0.
    """
    a = _float(advantages, "advantages")
    c = torch.as_tensor(coverage).to(device=a.device, dtype=a.dtype)
    if a.ndim < 2:
        raise ValueError(f"advantages: expected [.., G, K], got shape {tuple(a.shape)}")
    if c.ndim >= 3:
        c = c.flatten(-2)  # [.., K, h, w] -> [.., K, N], row-major
    elif c.ndim != 2:
        raise ValueError(f"coverage: expected [.., K, h, w] or [K, N], got shape {tuple(c.shape)}")
    if c.shape[-2] != a.shape[-1]:
        raise ValueError(f"coverage: {c.shape[-2]} regions but advantages have K={a.shape[-1]}")
    if mask is None:
        num = a @ c
        den = c.sum(-2, keepdim=True)
    else:
        mk = torch.as_tensor(mask, device=a.device)
        if mk.shape != a.shape:
            raise ValueError(f"mask: shape {tuple(mk.shape)} does not match advantages {tuple(a.shape)}")
        wf = mk.to(a.dtype)
        num = (torch.where(mk, a, 0.0)) @ c
        den = wf @ c
    out = num / den.clamp_min(torch.finfo(a.dtype).tiny)
    return torch.where(den > 0, out, 0.0)


# --------------------------------------------------------------------------- losses
def _clipped_objective(ratio: Tensor, adv: Tensor, clip_eps: float) -> Tensor:
    """Per-element PPO objective min(rho A, clip(rho) A) (to be maximized)."""
    return torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)


def flow_grpo_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    clip_eps: float,
    adv_clip: float | None = 5.0,
) -> Tensor:
    """Flow-GRPO's policy loss, the reference: `mean(max(-A rho, -A clip(rho, 1-eps, 1+eps)))`.

    Args:
        logp_new, logp_old: `[G]` or `[G, T]`: per-sample SDE-step log-densities, averaged
            over all latent dims (one ratio per sample per step, as Flow-GRPO does).
        advantages: `[G]`; clamped to +-adv_clip first (Flow-GRPO's adv_clip_max).
        clip_eps: ratio clip range.
    Returns:
        scalar, mean over G (and T).
    """
    a = _float(advantages, "advantages")
    if a.ndim != 1:
        raise ValueError(f"advantages: expected [G], got shape {tuple(a.shape)}")
    if logp_new.shape != logp_old.shape or logp_new.shape[0] != a.shape[0] or logp_new.ndim > 2:
        raise ValueError(
            f"logp_new/logp_old: expected [G] or [G, T] with G={a.shape[0]}, got "
            f"{tuple(logp_new.shape)} and {tuple(logp_old.shape)}"
        )
    if adv_clip is not None:
        a = a.clamp(-adv_clip, adv_clip)
    if logp_new.ndim == 2:
        a = a[:, None]
    ratio = torch.exp(logp_new - logp_old)
    return -_clipped_objective(ratio, a, clip_eps).mean()


def region_weighted_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    coverage: Tensor,
    advantages: Tensor,
    clip_eps: float,
    region_weights: str | Tensor = "area",
    *,
    mask: Tensor | None = None,
    adv_clip: float | None = 5.0,
) -> Tensor:
    """Region-weighted clipped GRPO objective (docs/spatial-credit.md, step 4).

    `L[i, t, r] = sum_n m[r, n] l[i, t, n] / sum_n m[r, n]`, `rho = exp(L_new - L_old)`,
    `loss = -(1 / (G' T)) sum_{i, t} sum_r pi[i, r] min(rho A, clip(rho, 1-eps, 1+eps) A)`.

    Args:
        logp_new, logp_old: `[G, N]` or `[G, T, N]`: per-token log-densities averaged over
            channels only (target tokens; condition-image tokens already cropped off).
        coverage: `[K, h, w]` or `[K, N]` shared by the group, or `[G, K, h, w]` per rollout
            (rollouts of different groups in one micro-batch); h * w = N, row-major.
        advantages: `[G, K]`; clamped to +-adv_clip (idempotent on `region_advantages`
            output with the same clip).
        clip_eps: ratio clip range.
        region_weights: "area" (pi_r proportional to the region's token coverage sum),
            "uniform", or a non-negative tensor `[K]` / `[G, K]`. Weights are zeroed for
            regions with no coverage and where `mask` is False, then renormalized per
            rollout to sum to 1.
        mask: optional bool `[G, K]` (`RegionAdvantages.mask`).

    Returns:
        scalar loss. G' = rollouts with at least one weighted region (a rollout with none
        contributes nothing rather than a zero-advantage term). With one region covering
        every token this equals `flow_grpo_loss(logp.mean(-1), ...)` exactly.
    """
    a = _float(advantages, "advantages")
    if a.ndim != 2:
        raise ValueError(f"advantages: expected [G, K], got shape {tuple(a.shape)}")
    G, K = a.shape
    if logp_new.shape != logp_old.shape or logp_new.ndim not in (2, 3) or logp_new.shape[0] != G:
        raise ValueError(
            f"logp_new/logp_old: expected [G, N] or [G, T, N] with G={G}, got "
            f"{tuple(logp_new.shape)} and {tuple(logp_old.shape)}"
        )
    squeeze_t = logp_new.ndim == 2
    dl = logp_new - logp_old
    if squeeze_t:
        dl = dl[:, None, :]
    N = dl.shape[-1]
    c = torch.as_tensor(coverage).to(device=dl.device, dtype=dl.dtype)
    if c.ndim == 3 or c.ndim == 4:
        c = c.flatten(-2)
    elif c.ndim != 2:
        raise ValueError(f"coverage: expected [K, h, w], [K, N] or [G, K, h, w], got {tuple(c.shape)}")
    if c.shape[-2] != K or c.shape[-1] != N or (c.ndim == 3 and c.shape[0] != G):
        raise ValueError(
            f"coverage: shape {tuple(c.shape)} (flattened) does not fit K={K} regions, N={N} tokens"
            + (f", G={G} rollouts" if c.ndim == 3 else "")
        )
    # Region log-ratio by linearity: L_new - L_old = region mean of (l_new - l_old).
    if c.ndim == 2:  # shared by the group: one GEMM [G*T, N] x [N, K], nothing expanded
        area = c.sum(-1).expand(G, K)                                   # [G, K] tokens
        L = dl @ c.T
    else:
        area = c.sum(-1)
        L = torch.einsum("gtn,gkn->gtk", dl, c)
    L = L / area.clamp_min(torch.finfo(dl.dtype).tiny)[:, None, :]

    if isinstance(region_weights, str):
        if region_weights not in WEIGHT_MODES:
            raise ValueError(f"region_weights: expected one of {WEIGHT_MODES} or a tensor, got {region_weights!r}")
        w = area.detach().clone() if region_weights == "area" else torch.ones_like(area)
    else:
        w = torch.as_tensor(region_weights).to(device=dl.device, dtype=dl.dtype)
        if w.shape not in ((K,), (G, K)):
            raise ValueError(f"region_weights: expected shape [K]={K} or [G, K]=[{G}, {K}], got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("region_weights: expected finite non-negative weights")
        w = w.expand(G, K).clone()
    keep = area > 0
    if mask is not None:
        mk = torch.as_tensor(mask, device=dl.device)
        if mk.shape != (G, K):
            raise ValueError(f"mask: expected shape [{G}, {K}], got {tuple(mk.shape)}")
        keep = keep & mk
    w = torch.where(keep, w, 0.0)
    total = w.sum(-1, keepdim=True)
    pi = w / total.clamp_min(torch.finfo(w.dtype).tiny)                  # [G, K], rows sum to 1 or 0

    if adv_clip is not None:
        a = a.clamp(-adv_clip, adv_clip)
    a = torch.where(keep, a.to(dl.dtype), 0.0)
    ratio = torch.exp(L)                                                # [G, T, K]
    per = _clipped_objective(ratio, a[:, None, :], clip_eps)
    per = torch.where(keep[:, None, :], per, 0.0)
    obj = (pi[:, None, :] * per).sum(-1)                                # [G, T]
    n_active = (total.squeeze(-1) > 0).sum().clamp_min(1)
    return -obj.sum() / (n_active * dl.shape[1])
