"""Benchmark sfreward.credit against a straightforward per-region Python loop.

Workload (issue 7): one group of G=24 rollouts at 1024x1024 with K=16 regions (15 photo
segments of skimage's astronaut + the background), 16 px latent tokens (64x64 = 4096).
Stages, both implementations timed interleaved in the same run (median and min):
  1. region advantages       rewards [24, 16] (a few invalid entries, one zero-spread region)
  2. token coverage          masks [15, 1024, 1024] -> [16, 64, 64]
  3. token advantages        -> [24, 4096]
  4. region-weighted loss    one trainer step: logp [24, 4096], forward + backward
The loop baseline loops over regions (and rollouts where the formula is per rollout and
region) with vectorized torch inside each iteration, never over pixels or tokens. Both
outputs are checked equal before timing.

Run: .venv/bin/python benchmarks/bench_credit.py [--repeats 15] [--threads 1]
Writes benchmarks/results/credit.md.
"""
from __future__ import annotations

import argparse
import os
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data, segmentation, transform
from torch.testing import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sfreward.credit import (  # noqa: E402
    region_advantages,
    region_weighted_loss,
    token_advantages,
    token_coverage,
)

G, SIZE, N_SEG, TP, CLIP_EPS = 24, 1024, 15, 16, 0.2


# --------------------------------------------------------------------------- workload
def photo_masks() -> torch.Tensor:
    """15 largest SLIC segments of the astronaut photo at 1024x1024 -> bool [15, 1024, 1024]."""
    img = transform.resize(data.astronaut(), (256, 256), anti_aliasing=True)
    labels = segmentation.slic(img, n_segments=40, compactness=10, start_label=0)
    labels = np.kron(labels, np.ones((SIZE // 256, SIZE // 256), dtype=labels.dtype))
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids[np.argsort(-counts)[:N_SEG]]
    return torch.from_numpy(labels[None] == keep[:, None, None])


def workload(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    masks = photo_masks()
    K = N_SEG + 1
    rewards = torch.rand(G, K, generator=g, dtype=torch.float32)
    rewards[:, 3] = 0.7                                   # a zero-spread region
    valid = torch.rand(G, K, generator=g) > 0.05          # ~5% failed region scores
    N = (SIZE // TP) ** 2
    logp_old = torch.randn(G, N, generator=g, dtype=torch.float32)
    logp_new = logp_old + 0.05 * torch.randn(G, N, generator=g, dtype=torch.float32)
    return masks, rewards, valid, logp_new, logp_old


# --------------------------------------------------------------------------- loop baseline
def loop_region_advantages(R, valid, clip=5.0, eps=1e-4, tol=1e-6):
    G, K = R.shape
    img = torch.zeros(G, dtype=R.dtype)
    img_ok = torch.zeros(G, dtype=torch.bool)
    for i in range(G):
        vals = R[i][valid[i]]
        if len(vals):
            img[i], img_ok[i] = vals.mean(), True
    iv = img[img_ok]
    img_adv = torch.zeros(G, dtype=R.dtype)
    img_adv[img_ok] = ((iv - iv.mean()) / (iv.std(unbiased=False) + eps)).clamp(-clip, clip)
    adv = torch.zeros(G, K, dtype=R.dtype)
    mask = torch.zeros(G, K, dtype=torch.bool)
    for k in range(K):
        idx = valid[:, k].nonzero().flatten()
        if len(idx) == 0:
            continue
        col = R[idx, k]
        std = col.std(unbiased=False)
        if std <= tol:
            for i in idx.tolist():
                if img_ok[i]:
                    adv[i, k], mask[i, k] = img_adv[i], True
        else:
            adv[idx, k] = ((col - col.mean()) / (std + eps)).clamp(-clip, clip)
            mask[idx, k] = True
    return adv, mask


def loop_token_coverage(masks, t):
    out = []
    union = torch.zeros(masks.shape[-2:], dtype=torch.bool)
    for k in range(masks.shape[0]):
        out.append(F.avg_pool2d(masks[k].float()[None, None], t)[0, 0])
        union |= masks[k]
    out.append(F.avg_pool2d((~union).float()[None, None], t)[0, 0])
    return torch.stack(out)


def loop_token_advantages(adv, mask, cov):
    G, K = adv.shape
    c = cov.flatten(1).to(adv.dtype)
    out = torch.zeros(G, c.shape[1], dtype=adv.dtype)
    for i in range(G):
        num = torch.zeros(c.shape[1], dtype=adv.dtype)
        den = torch.zeros(c.shape[1], dtype=adv.dtype)
        for k in range(K):
            if mask[i, k]:
                num += c[k] * adv[i, k]
                den += c[k]
        out[i] = torch.where(den > 0, num / den.clamp_min(1e-300), 0.0)
    return out


def loop_loss(logp_new, logp_old, cov, adv, mask, clip_eps):
    G, K = adv.shape
    c = cov.flatten(1).to(logp_new.dtype)
    total, active = 0.0, 0
    for i in range(G):
        weights = {k: c[k].sum() for k in range(K) if mask[i, k] and c[k].sum() > 0}
        wsum = sum(weights.values())
        if not weights:
            continue
        active += 1
        for k, wk in weights.items():
            L_new = (c[k] * logp_new[i]).sum() / c[k].sum()
            L_old = (c[k] * logp_old[i]).sum() / c[k].sum()
            ratio = torch.exp(L_new - L_old)
            a = adv[i, k].clamp(-5, 5)
            obj = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
            total = total + wk / wsum * obj
    return -total / max(active, 1)


# --------------------------------------------------------------------------- timing
def timeit_pair(vec, loop, repeats: int) -> tuple[float, float, float, float]:
    """Interleave the two implementations so both see the same machine load (the box is
    shared); return (median vec, median loop, min vec, min loop) in seconds."""
    vec(), loop()  # warm-up
    tv, tl = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        vec()
        t1 = time.perf_counter()
        loop()
        t2 = time.perf_counter()
        tv.append(t1 - t0)
        tl.append(t2 - t1)
    return statistics.median(tv), statistics.median(tl), min(tv), min(tl)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared box)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "credit.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    masks, rewards, valid, logp_new, logp_old = workload()

    # correctness first: both implementations agree on every stage
    ra = region_advantages(rewards, valid)
    adv_l, mask_l = loop_region_advantages(rewards, valid)
    assert_close(ra.advantages, adv_l)
    assert torch.equal(ra.mask, mask_l)
    cov = token_coverage(masks, TP, background=True)
    assert_close(cov, loop_token_coverage(masks, TP))
    tok = token_advantages(ra.advantages, cov, ra.mask)
    assert_close(tok, loop_token_advantages(ra.advantages, ra.mask, cov))
    lv = region_weighted_loss(logp_new, logp_old, cov, ra.advantages, CLIP_EPS, mask=ra.mask)
    assert_close(lv, loop_loss(logp_new, logp_old, cov, ra.advantages, ra.mask, CLIP_EPS))

    def vec_loss():
        x = logp_new.clone().requires_grad_(True)
        region_weighted_loss(x, logp_old, cov, ra.advantages, CLIP_EPS, mask=ra.mask).backward()

    def loop_loss_bw():
        x = logp_new.clone().requires_grad_(True)
        loop_loss(x, logp_old, cov, ra.advantages, ra.mask, CLIP_EPS).backward()

    stages = [
        ("region advantages [24, 16]", lambda: region_advantages(rewards, valid),
         lambda: loop_region_advantages(rewards, valid)),
        ("token coverage [15, 1024, 1024] -> [16, 64, 64]", lambda: token_coverage(masks, TP, background=True),
         lambda: loop_token_coverage(masks, TP)),
        ("token advantages -> [24, 4096]", lambda: token_advantages(ra.advantages, cov, ra.mask),
         lambda: loop_token_advantages(ra.advantages, ra.mask, cov)),
        ("region-weighted loss fwd+bwd [24, 4096]", vec_loss, loop_loss_bw),
    ]
    rows = []
    for name, vec, loop in stages:
        tv, tl, mv, ml = timeit_pair(vec, loop, args.repeats)
        rows.append((name, tv, tl, mv, ml))
        print(f"{name:50s} vectorized {tv * 1e3:9.3f} ms  loop {tl * 1e3:9.2f} ms  ratio {tl / tv:7.1f}x"
              f"  (min: {mv * 1e3:.3f} / {ml * 1e3:.2f} ms, {ml / mv:.1f}x)")
    tv_all, tl_all = sum(r[1] for r in rows), sum(r[2] for r in rows)
    mv_all, ml_all = sum(r[3] for r in rows), sum(r[4] for r in rows)
    print(f"{'all four':50s} vectorized {tv_all * 1e3:9.3f} ms  loop {tl_all * 1e3:9.2f} ms  ratio {tl_all / tv_all:7.1f}x"
          f"  (min: {ml_all / mv_all:.1f}x)")

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cmd = "cd /work/main && .venv/bin/python benchmarks/bench_credit.py" + " ".join(
        f" --{k} {v}" for k, v in [("repeats", args.repeats), ("threads", args.threads)])
    lines = [
        "# Credit assignment: vectorized vs per-region loop",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: 2-core CPU VM shared with other jobs ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, {args.threads} intra-op thread(s), float32",
        f"- command: `{cmd}`",
        f"- workload: G={G} rollouts, {SIZE}x{SIZE}, K=16 regions (15 SLIC segments of skimage astronaut + "
        f"background), {TP} px tokens (N=4096); the two implementations interleaved, {args.repeats} runs each after a warm-up (median and minimum reported; the box was shared and loaded, load average {load}); "
        "outputs of both implementations asserted equal first",
        "- baseline: Python loops over regions (and over rollouts where the formula is per rollout and region), "
        "vectorized torch inside each iteration",
        "",
        "| stage | vectorized median (ms) | loop median (ms) | speed-up (medians) | speed-up (minima) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, tv, tl, mv, ml in rows:
        lines.append(f"| {name} | {tv * 1e3:.3f} | {tl * 1e3:.2f} | {tl / tv:.1f}x | {ml / mv:.1f}x |")
    lines.append(f"| **all four (one group, one trainer step)** | {tv_all * 1e3:.3f} | {tl_all * 1e3:.2f} | "
                 f"**{tl_all / tv_all:.1f}x** | {ml_all / mv_all:.1f}x |")
    lines += [
        "",
        "In a trainer, advantages and coverage are computed once per group and the loss once per "
        "sampler timestep, so the loss row is the one that repeats. Token coverage is memory-bound "
        "(16 M mask pixels): the loop baseline already pools each region with a vectorized op, and "
        "ours sums 8 pixels per int64 lane instead of pooling a float copy.",
        "",
        "Timings on this shared, loaded 2-core box swing by 2-5x between runs (other jobs compete "
        "for memory bandwidth, which the coverage stage is bound by); the minima are the least "
        "disturbed estimate.",
        "",
        f"Target: >= 20x overall -> medians {tl_all / tv_all:.1f}x "
        f"({'met' if tl_all / tv_all >= 20 else 'NOT met'}), minima {ml_all / mv_all:.1f}x "
        f"({'met' if ml_all / mv_all >= 20 else 'NOT met'}).",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
