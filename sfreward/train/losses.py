"""Losses on the 0..25 targets (computed in normalized 0..1 units) that give the exact
gradient of the *global* batch under DDP.

Every term is a sum over the local items divided by a global count, times the world size
(DDP averages gradients over ranks, so the average of the per-rank gradients is the gradient
of the global mean). Ranking pairs may span ranks: the other ranks' predictions are gathered
as constants, and each rank differentiates the pairs that involve its own regions, so the
sum over ranks is again the full gradient.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from warehouse.scale import REWARD_MAX


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_sum(x: torch.Tensor) -> torch.Tensor:
    if world() > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


def gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate a [n, ...] tensor over ranks (sizes may differ). Returns (all, offset of
    this rank's rows)."""
    if world() == 1:
        return t, 0
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = torch.zeros((max(sizes),) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
    pad[: t.shape[0]] = t
    out = [torch.empty_like(pad) for _ in sizes]
    dist.all_gather(out, pad)
    rank = dist.get_rank()
    return torch.cat([o[:s] for o, s in zip(out, sizes)]), sum(sizes[:rank])


def gaussian_nll_sum(mu: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor,
                     beta: float, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Beta-NLL (Seitzer et al. 2022) summed over valid targets. mu, logvar, target: [R]
    (target on 0..25, NaN = missing); weight: optional [R] per-region weights. Returns
    (weighted sum, weighted count)."""
    valid = (~torch.isnan(target)).to(mu.dtype)
    if weight is not None:
        valid = valid * weight.to(mu.dtype)
    t = torch.nan_to_num(target / REWARD_MAX)
    nll = 0.5 * (logvar + (t - mu) ** 2 * torch.exp(-logvar))
    if beta > 0:
        nll = nll * torch.exp(logvar).detach() ** beta
    return (nll * valid).sum(), valid.sum()


def bad_region_weight(targets: torch.Tensor, bad_weight: float, bad_threshold: float = 12.5) -> torch.Tensor:
    """Per-region loss weights [R]: `bad_weight` where the target phi = min(success, preserve)
    (preserve alone where success is not rated) is below `bad_threshold` (0..25), else 1.
    targets: [R, 2] (success, preserve) on 0..25, NaN = not rated."""
    phi = target_phi(targets)
    return torch.where(phi < bad_threshold, torch.full_like(phi, bad_weight), torch.ones_like(phi))


def mse_sum(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = ~torch.isnan(target)
    t = torch.nan_to_num(target / REWARD_MAX)
    return (((pred - t) ** 2) * valid).sum(), valid.sum()


def pairwise_rank(pred: torch.Tensor, target: torch.Tensor, key: torch.Tensor, sample: torch.Tensor,
                  margin: float, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logistic ranking loss over pairs of the same region (same key) in different rollouts
    of a group whose targets differ by more than `margin` (0..25 units).

    pred, target: [R, D] (D score dimensions); key, sample: [R]. Returns (local sum to
    differentiate, global count of pairs, global sum for reporting)."""
    all_pred, off = gather_rows(pred.detach())
    n = pred.shape[0]
    all_pred = torch.cat([all_pred[:off], pred, all_pred[off + n:]])
    all_tgt, _ = gather_rows(target)
    all_key, _ = gather_rows(key)
    all_sample, _ = gather_rows(sample)
    local = torch.zeros(all_pred.shape[0], dtype=torch.bool, device=pred.device)
    local[off:off + n] = True
    same = (all_key[:, None] == all_key[None, :]) & (all_sample[:, None] != all_sample[None, :])
    involve = local[:, None] | local[None, :]
    loss = pred.sum() * 0.0
    count = torch.zeros((), device=pred.device)
    report = torch.zeros((), device=pred.device)
    for d in range(all_pred.shape[1]):
        t = all_tgt[:, d]
        valid = ~torch.isnan(t)
        tn = torch.nan_to_num(t)
        pairs = same & valid[:, None] & valid[None, :] & ((tn[:, None] - tn[None, :]) > margin)
        if not bool(pairs.any()):
            continue
        l = F.softplus(-scale * (all_pred[:, d][:, None] - all_pred[:, d][None, :]))
        loss = loss + (l * (pairs & involve)).sum()
        count = count + pairs.sum()
        report = report + (l.detach() * pairs).sum()
    return loss, count, report


def target_phi(targets: torch.Tensor) -> torch.Tensor:
    """phi = min(success, preserve) of targets [R, 2] (0..25), preserve alone where success is
    not rated (the background); NaN where neither is. -> [R]."""
    return torch.where(torch.isnan(targets[:, 0]), targets[:, 1], torch.fmin(targets[:, 0], targets[:, 1]))


def localization_rank(success: torch.Tensor, preserve: torch.Tensor, targets: torch.Tensor,
                      region_image: torch.Tensor, margin: float, scale: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logistic ranking loss over pairs of regions of the *same image* whose target phi differs
    by more than `margin` (0..25 units): the worse region must score lower. This is what the
    localization metric (sfreward.evaluate) measures: which region of an edit went wrong.

    success, preserve: predicted means [R] (0..1); targets [R, 2] on 0..25 (NaN = not rated);
    region_image: [R] image index. An image's regions are all on one rank, so no gathering is
    needed: returns (local sum to differentiate, global count of pairs, global sum for reporting)."""
    t = target_phi(targets)
    pred = torch.where(torch.isnan(targets[:, 0]), preserve, torch.minimum(success, preserve))
    valid = ~torch.isnan(t)
    tn = torch.nan_to_num(t)
    pairs = ((region_image[:, None] == region_image[None, :]) & valid[:, None] & valid[None, :]
             & ((tn[:, None] - tn[None, :]) > margin))
    l = F.softplus(-scale * (pred[:, None] - pred[None, :]))
    loss = (l * pairs).sum()
    count = all_sum(pairs.sum().float())
    report = all_sum(loss.detach())
    return loss, count, report
