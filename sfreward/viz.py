"""Pictures people would rather look at than read: regions on images colored by score.

`score_overlay(image, masks, scores)` blends each region with a red-to-green color for its
score (0..25) and draws its outline; `score_grid(items, path)` lays several samples out in one
PNG with the instruction and the scores written under each.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from warehouse.scale import REWARD_MAX


def score_color(score: float) -> np.ndarray:
    """0..25 -> RGB float [3] in 0..1, red (bad) through yellow to green (good)."""
    import matplotlib

    t = float(np.clip(score / REWARD_MAX, 0.0, 1.0))
    return np.asarray(matplotlib.colormaps["RdYlGn"](t)[:3])


def score_overlay(image: np.ndarray, masks: np.ndarray, scores: Sequence[float], alpha: float = 0.45) -> np.ndarray:
    """image uint8 [H, W, 3], masks bool [K, H, W], scores [K] on 0..25 -> uint8 [H, W, 3].

    Later masks are painted over earlier ones, so pass the background first."""
    from skimage.segmentation import find_boundaries

    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks are {masks.shape[1:]} but the image is {image.shape[:2]}")
    if len(scores) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(scores)} scores")
    out = image.astype(np.float32) / 255.0
    for m, s in zip(masks, scores):
        if not np.isfinite(s):
            continue
        c = score_color(s)
        out[m] = (1 - alpha) * out[m] + alpha * c
        out[find_boundaries(m, mode="inner")] = c
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def score_grid(items: list[dict], path: str | Path, title: str = "") -> Path:
    """items: dicts with `source`, `edited` (uint8 [H, W, 3]), `masks` (bool [K, H, W]),
    `scores` ([K], 0..25), `instruction`, optional `labels` (aggregated human labels, [K]),
    `truth` (ground truth where known, [K]) and `kinds` ([K]).
    Writes a PNG with one row per item: source | edited | edited colored by predicted score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(items)
    if n == 0:
        raise ValueError("score_grid needs at least one item")
    fig, axes = plt.subplots(n, 3, figsize=(9.5, 3.4 * n), squeeze=False)
    for row, it in zip(axes, items):
        row[0].imshow(it["source"])
        row[0].set_title("source", fontsize=9)
        row[1].imshow(it["edited"])
        row[1].set_title(_wrap(it.get("instruction", ""), 45), fontsize=8)
        row[2].imshow(score_overlay(it["edited"], it["masks"], it["scores"]))
        lines = []
        for k, s in enumerate(it["scores"]):
            kind = it.get("kinds", [""] * len(it["scores"]))[k]
            refs = []
            for name, key in (("label", "labels"), ("truth", "truth")):
                vals = it.get(key)
                if vals is not None and np.isfinite(vals[k]):
                    refs.append(f"{name} {vals[k]:.0f}")
            t = f" ({', '.join(refs)})" if refs else ""
            lines.append(f"{kind or 'region'} {k}: {s:.1f}{t}")
        row[2].set_title("predicted region score (0..25)", fontsize=9)
        row[2].text(1.02, 0.98, "\n".join(lines[:10]), transform=row[2].transAxes, fontsize=7, va="top")
        for ax in row:
            ax.axis("off")
    sm = plt.cm.ScalarMappable(cmap="RdYlGn", norm=matplotlib.colors.Normalize(0, REWARD_MAX))
    fig.colorbar(sm, ax=axes[:, 2].tolist(), fraction=0.03, pad=0.25, label="score")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3])
