"""Per-region pixel statistics of an edit: what changed inside each region and how badly.

The region head of `SFRewardModel` reads these beside the pooled patch tokens (or, with
`region_inputs='features'`, instead of them). All are mask-weighted means over exactly the
region's pixels at model resolution, so they see what a transformer's mixed tokens blur:
version 1 the change and colour statistics, version 2 adds SSIM-style structure terms, version 3
(`damage=True`) grades the damage (contrast loss of flat regions, blocking).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

N_REGION_STATS = 16
N_STRUCTURE_STATS = 5
N_DAMAGE_STATS = 3
# Columns of region_pixel_stats in small pixel units (~0.05-0.3): the 16 statistics and the two
# standard deviations of the structure terms; the ratio and the correlations are unit-scale.
N_SMALL_STATS = N_REGION_STATS + 2
# Deviation floor of the fine ratio (0..1 luma): 8-bit quantisation is 0.004 peak to peak.
FINE_EPS = 0.002
# Neighbouring pixels closer than this (0..1) count as equal: half an 8-bit step.
FLAT_STEP = 0.5 / 255


def flat_share(y: torch.Tensor) -> torch.Tensor:
    """Per pixel, the share (0, 0.5 or 1) of its right and lower neighbours with the same luma
    (within FLAT_STEP); the last column and row count their one neighbour twice, so a constant
    image is 1 everywhere. y: [B, 1, H, W] -> [B, 1, H, W]."""
    dx = (y[..., :, 1:] - y[..., :, :-1]).abs() < FLAT_STEP
    dy = (y[..., 1:, :] - y[..., :-1, :]).abs() < FLAT_STEP
    dx = torch.cat([dx, dx[..., :, -1:]], -1).to(y.dtype)
    dy = torch.cat([dy, dy[..., -1:, :]], -2).to(y.dtype)
    return 0.5 * (dx + dy)


def blur3x3(x: torch.Tensor) -> torch.Tensor:
    """Mean over each pixel's 3x3 neighbourhood inside the image (border pixels average the
    neighbours they have): [B, C, H, W] -> [B, C, H, W]. Same values as
    F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), but as shifted adds: that pooling kernel
    was 40% of a batched CPU forward (4.5x slower than this at batch 64)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    s = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    def count(n: int) -> torch.Tensor:   # neighbours along one axis: 2 at a border, else 3
        c = torch.full((n,), 3.0, dtype=x.dtype, device=x.device)
        c[0] -= 1
        c[-1] -= 1
        return c
    return s / (count(h)[:, None] * count(w)[None, :])


def hf_energy(x: torch.Tensor) -> torch.Tensor:
    """High-frequency energy |x - blur3x3(x)|, mean over channels: [B, C, H, W] -> [B, 1, H, W]."""
    return (x - blur3x3(x)).abs().mean(1, keepdim=True)


def pixel_stats(sources: torch.Tensor, edits: torch.Tensor, g: int) -> torch.Tensor:
    """Low-level change statistics per patch: mean |edited - source| and mean signed
    difference per channel (6), high-frequency energy |x - blur3x3(x)| of edited, source and
    their difference (3): blur lowers it, noise raises it. [B, 3, S, S] x2 -> [B, 9, g, g]."""
    diff = edits - sources
    he, hs = F.adaptive_avg_pool2d(hf_energy(edits), g), F.adaptive_avg_pool2d(hf_energy(sources), g)
    return torch.cat([F.adaptive_avg_pool2d(diff.abs(), g), F.adaptive_avg_pool2d(diff, g), he, hs, he - hs], 1)


def pool_regions(maps: torch.Tensor, region_masks: torch.Tensor, region_image: torch.Tensor) -> torch.Tensor:
    """Mask-weighted means [R, C] of per-pixel maps [B, C, S, S] over each region's coverage
    [R, S, S] in the image region_image [R] names. One matmul per image: indexing maps by
    region would copy a [R, C, S, S] tensor (126 MB for 120 regions at 128 px)."""
    m = region_masks.to(maps.dtype).flatten(1)                                         # [R, S*S]
    area = m.sum(1).clamp_min(1e-6)[:, None]
    flat = maps.flatten(2)                                                             # [B, C, S*S]
    out = maps.new_zeros(m.shape[0], maps.shape[1])
    for b in torch.unique(region_image).tolist():
        sel = region_image == b
        out[sel] = m[sel] @ flat[b].T
    return out / area


def region_pixel_stats(sources: torch.Tensor, edits: torch.Tensor, region_masks: torch.Tensor,
                       region_image: torch.Tensor, structure: bool = False, damage: bool = False) -> torch.Tensor:
    """Per-region change statistics at full model resolution, mask-weighted means over each
    region's own pixels: |edited - source| (3) and edited - source (3) per channel, the share of
    pixels that changed visibly (|diff| > 0.05 in any channel, 1), high-frequency energy of
    edited, source and their difference (3; blur lowers it, noise raises it), mean colour of the
    edited and the source region (6). Unlike patch tokens (a transformer mixes every patch with
    every other) these see exactly the region's pixels.

    structure=True appends N_STRUCTURE_STATS structure terms on luma (as in SSIM, but per
    region): the edited and the source standard deviation, the log of their ratio (contrast
    changes), and the correlation of edited with source, of the luma and of its high-frequency
    part (noise, blur and blocking break it while a tone or colour change keeps it).
    damage=True (with structure) appends N_DAMAGE_STATS terms that grade *how much* damage
    (features version 3): the deviation log ratio with a small constant (the 0.01 of the
    structure ratio flattens the strong contrast losses of low-texture regions: a ratio of 0.22
    reads as 0.34), and the share of the edited region's neighbouring luma pairs that are equal
    (a flat patch: blocking makes whole blocks flat, the larger the blocks the larger the share)
    and that share minus the source's.
    sources, edits [B, 3, S, S] in 0..1; region_masks [R, S, S] coverage;
    -> [R, 16 (+5 (+3))]."""
    if damage and not structure:
        raise ValueError("region_pixel_stats: damage=True needs structure=True (it extends the structure terms)")
    diff = edits - sources
    he, hs = hf_energy(edits), hf_energy(sources)
    changed = (diff.abs().amax(1, keepdim=True) > 0.05).to(diff.dtype)
    maps = [diff.abs(), diff, changed, he, hs, he - hs, edits, sources]               # 16 channels
    if structure:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=diff.dtype, device=diff.device)[None, :, None, None]
        ye, ys = (edits * luma).sum(1, keepdim=True), (sources * luma).sum(1, keepdim=True)
        he1, hs1 = ye - blur3x3(ye), ys - blur3x3(ys)
        maps += [ye, ys, ye * ye, ys * ys, ye * ys, he1 * he1, hs1 * hs1, he1 * hs1]
        if damage:
            maps += [flat_share(ye), flat_share(ys)]
    pooled = pool_regions(torch.cat(maps, 1), region_masks, region_image)
    if not structure:
        return pooled
    base, (me, ms, ee, ss, es, hee, hss, hes) = pooled[:, :16], pooled[:, 16:24].unbind(1)
    ve, vs = (ee - me * me).clamp_min(0), (ss - ms * ms).clamp_min(0)
    sd_e, sd_s = ve.sqrt(), vs.sqrt()
    # SSIM's structure term (cov + C3) / (sd_e sd_s + C3), C3 = (0.03)^2 / 2: 1 for an unchanged
    # region, flat ones included (a bare ratio would be 0/0 there).
    c3 = 4.5e-4
    corr = (es - me * ms + c3) / (sd_e * sd_s + c3)
    hcorr = (hes + c3) / (hee.sqrt() * hss.sqrt() + c3)   # the high-pass part has ~zero mean
    ratio = torch.log((sd_e + 0.01) / (sd_s + 0.01))
    out = [base, torch.stack([sd_e, sd_s, ratio, corr, hcorr], 1)]
    if damage:
        flat_e, flat_s = pooled[:, 24], pooled[:, 25]
        fine = torch.log((sd_e + FINE_EPS) / (sd_s + FINE_EPS))
        out.append(torch.stack([fine, flat_e, flat_e - flat_s], 1))
    return torch.cat(out, 1)
