"""The weight-free proposer: image segments from scikit-image (Felzenszwalb graph segmentation
or SLIC superpixels) for context regions, and change components snapped to those segments for
edit regions. Its regions follow image structure; it serves the embedded default and the demo
when no SAM checkpoint is configured, and labels its output `classical`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import segmentation, transform

from sfreward.regions.base import Candidate, ProposerConfig


def segment(image: np.ndarray, config: ProposerConfig) -> np.ndarray:
    """Segment labels int [H, W] (0..n-1) of a uint8 [H, W, 3] image, computed at a long side of
    at most `classical_work_side` and upsampled (nearest) to full size."""
    h, w = image.shape[:2]
    scale = min(1.0, config.classical_work_side / max(h, w))
    small = image if scale == 1.0 else transform.resize(
        image, (max(8, round(h * scale)), max(8, round(w * scale))), order=1, anti_aliasing=True)
    if config.segmenter == "slic":
        labels = segmentation.slic(small, n_segments=config.slic_n_segments, compactness=10,
                                   start_label=0, channel_axis=-1)
    else:
        # min_size tied to the smallest region we keep, so segments are never dropped as tiny.
        min_size = max(20, int(config.min_area_frac * small.shape[0] * small.shape[1]))
        labels = segmentation.felzenszwalb(small, scale=config.felzenszwalb_scale, sigma=0.8,
                                           min_size=min_size)
    if labels.shape != (h, w):
        # Nearest-neighbour index mapping keeps labels exact.
        yi = np.minimum((np.arange(h) * labels.shape[0] / h).astype(int), labels.shape[0] - 1)
        xi = np.minimum((np.arange(w) * labels.shape[1] / w).astype(int), labels.shape[1] - 1)
        labels = labels[yi[:, None], xi[None, :]]
    return labels


def snap(component: np.ndarray, labels: np.ndarray, min_inside: float = 0.7) -> np.ndarray | None:
    """Snap a change component (bool [H, W]) to image segments: the union of the segments
    lying mostly (>= min_inside of their pixels) inside it (0.7: at 0.5 segments straddling
    the border of a pasted patch pull in too much surrounding), with holes filled. None when no
    segment qualifies or the snapped mask strays too far from the component (IoU < 0.5)."""
    inside = np.bincount(labels[component], minlength=labels.max() + 1)
    total = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    keep = np.flatnonzero(inside >= min_inside * np.maximum(total, 1))
    if len(keep) == 0:
        return None
    snapped = ndi.binary_fill_holes(np.isin(labels, keep) | component)
    iou = (snapped & component).sum() / max(1, (snapped | component).sum())
    return snapped if iou >= 0.5 else None


def edit_candidates(components: list[np.ndarray], labels: np.ndarray) -> list[Candidate]:
    """One edit candidate per change component: snapped to segments of the source when that
    works (proposed_on='source'), else the component itself ('derived')."""
    out = []
    for comp in components:
        snapped = snap(comp, labels)
        if snapped is not None:
            out.append(Candidate("edit", snapped, "source", score=float(comp.sum())))
        else:
            out.append(Candidate("edit", comp, "derived", score=float(comp.sum())))
    return out


def context_candidates(labels: np.ndarray, limit: int) -> list[Candidate]:
    """Context candidates: the `limit` largest segments, largest first (score = area)."""
    areas = np.bincount(labels.ravel())
    order = [i for i in np.argsort(-areas, kind="stable") if areas[i] > 0][:limit]
    return [Candidate("context", labels == i, "source", score=float(areas[i])) for i in order]
