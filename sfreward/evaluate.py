"""Evaluation of an SFReward model on a split of a dataset export.

Metrics (scores on 0..25; phi = min(success, preserve), preserve alone where success is not
rated, e.g. background):
- region_{plcc,srcc}_{success,preserve} and their means over the two dimensions;
- pairwise_accuracy: within a GRPO group, the same region in two rollouts whose targets
  differ by more than `margin`: is the predicted order right (ties count 1/2);
- image_plcc_{overall,naturalness,artifacts};
- localization_auroc: over samples with exactly one bad region (target phi < bad_threshold)
  and at least two regions, the probability that the bad region's predicted phi is below a
  good region's of the same sample; localization_top1: the bad one is the lowest;
- corrupt_top1: on samples without a bad region, one region of the edited image is blurred,
  noised or recolored; is that region's predicted phi drop the largest of the sample.
NaN metrics (nothing to measure) are returned as None.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from sfreward.model import SFRewardModel
from sfreward.data import RegionDataset, collate

CORRUPTIONS = ("blur", "noise", "recolor")


def corrupt(image: torch.Tensor, mask: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """Blur / noise / recolor the pixels of mask [H, W] in image [3, H, W] (0..1)."""
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur
        s = max(1.0, image.shape[-1] / 24)
        k = int(2 * round(3 * s) + 1)
        g = gaussian_blur(image[None], [k, k], [s, s])[0]
    elif kind == "noise":
        gen = torch.Generator().manual_seed(seed)
        g = image + torch.randn(image.shape, generator=gen) * 0.25
    elif kind == "recolor":
        g = 1.0 - image.flip(0)
    else:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    m = mask.to(image.dtype)[None]
    return (image * (1 - m) + g * m).clamp(0, 1)


def _phi(success: np.ndarray, preserve: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(success), preserve, np.fmin(success, preserve))


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(fn(a[ok], b[ok])[0])


def _predict_all(model: SFRewardModel, ds: RegionDataset, batch_size: int) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    for i in range(0, len(ds), batch_size):
        samples = [ds[j] for j in range(i, min(len(ds), i + batch_size))]
        b = collate(samples, ds)
        k = [len(s.region_ids) for s in samples]
        out = model.predict(b["sources"], b["edits"], b["instructions"], list(b["masks"].split(k)),
                            [s.kinds for s in samples])
        for key, v in {"success": out["success"], "preserve": out["preserve"],
                       "overall": out["overall"], "naturalness": out["naturalness"],
                       "artifacts": out["artifacts"], "t_region": b["targets"],
                       "t_image": b["image_targets"], "key": b["region_key"],
                       "sample": b["region_sample"]}.items():
            parts.setdefault(key, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def region_metrics(success: np.ndarray, preserve: np.ndarray, targets: np.ndarray, sample: np.ndarray,
                   bad_threshold: float = 12.5) -> dict:
    """Region SRCC/PLCC per dimension and their mean, and localization (see module docstring) of
    predictions success, preserve [R] against targets [R, 2] (success, preserve; NaN = not rated)
    grouped by sample [R]. The one implementation used against labels (evaluate) and against the
    synthetic ground truth (the demo report)."""
    m: dict = {}
    for d, name in enumerate(("success", "preserve")):
        pred = success if d == 0 else preserve
        m[f"region_plcc_{name}"] = _corr(stats.pearsonr, pred, targets[:, d])
        m[f"region_srcc_{name}"] = _corr(stats.spearmanr, pred, targets[:, d])
    for kind in ("plcc", "srcc"):
        vals = [m[f"region_{kind}_{n}"] for n in ("success", "preserve") if not math.isnan(m[f"region_{kind}_{n}"])]
        m[f"region_{kind}_mean"] = float(np.mean(vals)) if vals else float("nan")
    m.update(_localization({"success": success, "preserve": preserve, "t_region": targets, "sample": sample},
                           bad_threshold))
    return m


def pairwise_accuracy(pred: np.ndarray, target: np.ndarray, key: np.ndarray, sample: np.ndarray,
                      margin: float) -> tuple[float, int]:
    """pred, target: [R]; pairs with equal key, different sample, |target gap| > margin."""
    ok = ~np.isnan(target)
    p, t, k, s = pred[ok], target[ok], key[ok], sample[ok]
    pairs = (k[:, None] == k[None, :]) & (s[:, None] != s[None, :]) & (t[:, None] - t[None, :] > margin)
    n = int(pairs.sum())
    if n == 0:
        return float("nan"), 0
    d = p[:, None] - p[None, :]
    return float(((d > 0) + 0.5 * (d == 0))[pairs].sum() / n), n


def evaluate(model: SFRewardModel, data_dir: str | Path, split: str = "test", batch_size: int = 16,
             margin: float = 2.5, bad_threshold: float = 12.5, corrupt_test: bool = True) -> dict:
    """Metrics of `model` on one split (see module docstring)."""
    model.eval()
    ds = RegionDataset(data_dir, split, model.config.image_size, "region", preload=False)
    p = _predict_all(model, ds, batch_size)
    m: dict[str, float | int | None] = {"n_samples": len(ds), "n_regions": int(len(p["key"])),
                                        "n_skipped": len(ds.skipped)}
    m.update(region_metrics(p["success"], p["preserve"], p["t_region"], p["sample"], bad_threshold))
    accs, n_pairs = [], 0
    for d, name in enumerate(("success", "preserve")):
        acc, n = pairwise_accuracy(p[name], p["t_region"][:, d], p["key"], p["sample"], margin)
        if n:
            accs.append(acc * n)
            n_pairs += n
    m["pairwise_accuracy"] = float(sum(accs) / n_pairs) if n_pairs else float("nan")
    m["n_pairs"] = n_pairs
    for d, name in enumerate(("overall", "naturalness", "artifacts")):
        m[f"image_plcc_{name}"] = _corr(stats.pearsonr, p[name], p["t_image"][:, d])
    if corrupt_test:
        m.update(corrupt_one_region(model, ds, p, bad_threshold))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}


def _localization(p: dict, bad_threshold: float) -> dict:
    phi_t = _phi(p["t_region"][:, 0], p["t_region"][:, 1])
    phi_p = np.minimum(p["success"], p["preserve"])
    phi_p = np.where(np.isnan(p["t_region"][:, 0]), p["preserve"], phi_p)  # same rule as targets
    wins, pairs, top1, n = 0.0, 0, 0, 0
    for s in np.unique(p["sample"]):
        sel = p["sample"] == s
        t, q = phi_t[sel], phi_p[sel]
        bad = t < bad_threshold
        if len(t) < 2 or bad.sum() != 1 or np.isnan(t).any():
            continue
        qb, qg = q[bad][0], q[~bad]
        wins += float((qb < qg).sum() + 0.5 * (qb == qg).sum())
        pairs += len(qg)
        top1 += int(qb < qg.min())
        n += 1
    return {"localization_auroc": wins / pairs if pairs else float("nan"),
            "localization_top1": top1 / n if n else float("nan"), "n_localization": n}


@torch.no_grad()
def corrupt_one_region(model: SFRewardModel, ds: RegionDataset, p: dict, bad_threshold: float,
                       max_samples: int = 64, min_area: float = 0.03) -> dict:
    """Corrupt one region of good edits and check that region's score drops most."""
    phi_t = _phi(p["t_region"][:, 0], p["t_region"][:, 1])
    hits, drops, n = 0, [], 0
    for i in range(len(ds)):
        if n >= max_samples:
            break
        sel = p["sample"] == i
        if sel.sum() < 2 or (phi_t[sel] < bad_threshold).any():
            continue
        s = ds[i]
        area = s.masks.mean((1, 2))
        cands = torch.nonzero(area >= min_area).flatten().tolist()
        if len(cands) < 2:
            continue
        r = cands[i % len(cands)]
        kind = CORRUPTIONS[i % len(CORRUPTIONS)]
        src = s.source.float()[None] / 255
        edt = s.edited.float()[None] / 255
        bad = corrupt(edt[0], s.masks[r] > 0.5, kind, seed=i)[None]
        masks = (s.masks > 0.5)
        out = model.predict(torch.cat([src, src]), torch.cat([edt, bad]), [s.instruction] * 2, [masks, masks],
                            [s.kinds, s.kinds])
        phi = torch.minimum(out["success"], out["preserve"]).cpu()
        k = masks.shape[0]
        bg = torch.tensor([kd == "background" for kd in s.kinds] * 2)
        phi = torch.where(bg, out["preserve"].cpu(), phi)  # success is not rated on background
        drop = phi[:k] - phi[k:]
        hits += int(int(drop.argmax()) == r)
        drops.append(float(drop[r]))
        n += 1
    return {"corrupt_top1": hits / n if n else float("nan"),
            "corrupt_drop": float(np.mean(drops)) if drops else float("nan"), "n_corrupt": n}
