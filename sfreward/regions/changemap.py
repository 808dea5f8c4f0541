"""Where did the edit change the image? A robust change map and its connected components.

The map is the CIELAB distance (delta-E 1976) between the Gaussian-denoised source and edited
images, thresholded at max(absolute floor, median + k * robust sigma): editors re-encode every
pixel through a VAE, so unchanged areas differ by a small, roughly uniform amount that the
median/MAD term absorbs. Morphological opening/closing and an area filter remove speckle.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import color, measure, morphology

from sfreward.regions.base import ProposalError, check_image


def match_size(edited: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an edited image uint8 [h, w, 3] to the source's (H, W) if they differ (editors
    often return another resolution); regions live on the source grid."""
    if edited.shape[:2] == tuple(shape):
        return edited
    h, w = shape
    # Box filter when shrinking (anti-aliased), bilinear when enlarging.
    resample = Image.BOX if edited.shape[0] > h or edited.shape[1] > w else Image.BILINEAR
    return np.asarray(Image.fromarray(edited).resize((w, h), resample))


def _downscale(image: np.ndarray, work_side: int) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [h, w, 3] in [0, 1] with long side <= work_side."""
    h, w = image.shape[:2]
    scale = work_side / max(h, w)
    if scale >= 1:
        return image.astype(np.float32) / 255.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # PIL's box filter: an area average (anti-aliased) and far cheaper than skimage's resize.
    small = Image.fromarray(image).resize(size, Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def to_lab(image: np.ndarray, sigma: float = 1.0, work_side: int = 512) -> np.ndarray:
    """Denoised CIELAB float32 [h, w, 3] at the working resolution (long side <= work_side).
    A group computes its source's once and compares every rollout against it."""
    x = _downscale(image, work_side)
    if sigma > 0:
        x = ndi.gaussian_filter(x, sigma=(sigma, sigma, 0))
    return color.rgb2lab(x).astype(np.float32)


def delta_e(source: np.ndarray, edited: np.ndarray, sigma: float = 1.0,
            work_side: int = 512) -> np.ndarray:
    """Per-pixel CIELAB distance, float [h, w] at the working resolution (long side <= work_side)."""
    return np.linalg.norm(to_lab(source, sigma, work_side) - to_lab(edited, sigma, work_side), axis=-1)


def change_map(source: np.ndarray, edited: np.ndarray, threshold: float = 12.0,
               noise_k: float = 4.0, sigma: float = 1.0, work_side: int = 512,
               min_area_frac: float = 0.001, source_lab: np.ndarray | None = None) -> np.ndarray:
    """Bool [H, W] on the source grid: True where the edit changed the image.

    source, edited: uint8 [H, W, 3] (edited is resized to the source size if needed).
    threshold: absolute delta-E floor; noise_k: multiples of the robust noise sigma
    (1.4826 * MAD) above the median; min_area_frac: smallest component kept, as a fraction
    of the image area; source_lab: `to_lab(source, sigma, work_side)` when already computed.
    """
    source = check_image(source, "source image")
    edited = match_size(check_image(edited, "edited image"), source.shape[:2])
    if source_lab is None:
        source_lab = to_lab(source, sigma, work_side)
    de = np.linalg.norm(source_lab - to_lab(edited, sigma, work_side), axis=-1)
    med = float(np.median(de))
    mad = float(np.median(np.abs(de - med)))
    thr = max(threshold, med + noise_k * 1.4826 * mad)
    mask = de > thr
    # Radii scale with the working resolution so a 256 px and a 1024 px image behave alike.
    r = max(1, round(max(de.shape) / 256))
    # Iterated 3x3 crosses (diamonds of radius r / 2r): cheaper than disk footprints.
    cross = ndi.generate_binary_structure(2, 1)
    # Edge padding: changes touching the image border must keep their border pixels.
    p = 2 * r
    mask = np.pad(mask, p, mode="edge")
    mask = ndi.binary_opening(mask, structure=cross, iterations=r)
    mask = ndi.binary_closing(mask, structure=cross, iterations=2 * r)[p:-p, p:-p]
    min_px = max(1, int(min_area_frac * mask.size))
    mask = morphology.remove_small_objects(mask, max_size=min_px)
    mask = morphology.remove_small_holes(mask, max_size=min_px)
    if mask.shape != source.shape[:2]:
        up = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (source.shape[1], source.shape[0]), Image.BILINEAR)
        mask = np.asarray(up) > 127
    return mask


def components(mask: np.ndarray, min_area: int = 1) -> list[np.ndarray]:
    """Connected components (8-connectivity) of a bool [H, W] mask with at least `min_area`
    pixels, largest first, each a bool [H, W] array."""
    if mask.ndim != 2:
        raise ProposalError(f"change mask must be 2-D [H, W], got shape {mask.shape}")
    labels = measure.label(mask, connectivity=2)
    if labels.max() == 0:
        return []
    areas = np.bincount(labels.ravel())
    order = [i for i in np.argsort(-areas[1:], kind="stable") + 1 if areas[i] >= min_area]
    return [labels == i for i in order]


def merge_fragments(comps: list[np.ndarray], gap_px: int, sliver_px: int = 0) -> list[np.ndarray]:
    """Fragments of one change -> one component. Components (bool [H, W]) closer than `gap_px`
    pixels to each other are unioned (one recolour broken up by unchanged pixels is one edit for
    an annotator); components farther apart stay separate (the targets of a multi-region
    instruction). A sliver (no pixel deeper than `sliver_px` inside it: a thin line of changed
    edge pixels) that has no larger neighbour to merge into is dropped. Largest first."""
    if not comps:
        return []
    union = np.logical_or.reduce(comps)
    groups = measure.label(ndi.binary_dilation(union, iterations=gap_px) if gap_px > 0 else union,
                           connectivity=2)
    merged: dict[int, np.ndarray] = {}
    for comp in comps:
        g = int(groups[comp].max())
        merged[g] = merged[g] | comp if g in merged else comp.copy()
    out = list(merged.values())
    if sliver_px > 0:
        out = [m for m in out if ndi.distance_transform_edt(np.pad(m, 1)).max() > sliver_px]
    return sorted(out, key=lambda m: -int(m.sum()))


def split_by_rollouts(component: np.ndarray, maps: list[np.ndarray], segments: np.ndarray | None,
                      min_px: int, sliver_px: int = 0, min_share: float = 0.1) -> list[np.ndarray]:
    """Split one change component (bool [H, W]) of a group's union into the parts that different
    sets of rollouts changed. `maps`: the group's change maps, bool [H, W] each, in rollout order;
    `segments`: image segments of the source, int [H, W] labels (None: pixel by pixel).

    A segment's signature is the set of rollouts that changed most of its pixels inside the
    component; a pixel takes its segment's. Voting per segment matters: a partial recolour or a
    noise artifact passes the change threshold on scattered pixels only, and pixel signatures
    would cut one object into pieces. A part is all pixels of the component with one signature
    (connected or not, so the fragments of one change stay one part) holding at least
    max(min_px, min_share x the component) pixels and deeper than `sliver_px`; the remaining
    pixels join the nearest part. Why: an edit is made by most rollouts, a damaged neighbour or
    background only by some, and the union alone merges them into one region when they touch.
    Returns the parts (largest first), or [component] when it has one part or one rollout."""
    if len(maps) < 2:
        return [component]
    ys, xs = np.nonzero(component)
    changed = np.stack([m[ys, xs] for m in maps], axis=1)           # [pixels, rollouts]
    if segments is not None:
        seg = np.unique(segments[ys, xs], return_inverse=True)[1].reshape(-1)
        votes = np.stack([np.bincount(seg, weights=changed[:, i]) for i in range(len(maps))], 1)
        changed = (votes / np.bincount(seg)[:, None] > 0.5)[seg]
    table, inverse, counts = np.unique(changed, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    need = max(min_px, min_share * len(ys))
    parts = []
    # A signature no rollout is in (gaps that fragment merging bridged) is never a part.
    for v in np.flatnonzero((counts >= need) & table.any(axis=1)):
        part = np.zeros(component.shape, dtype=bool)
        sel = inverse == v
        part[ys[sel], xs[sel]] = True
        if sliver_px <= 0 or ndi.distance_transform_edt(np.pad(part, 1)).max() > sliver_px:
            parts.append(part)
    if len(parts) < 2:
        return [component]
    label = np.zeros(component.shape, dtype=np.int32)
    for k, part in enumerate(parts, 1):
        label[part] = k
    # Each remaining pixel goes to the part whose nearest pixel is closest.
    _, (iy, ix) = ndi.distance_transform_edt(label == 0, return_indices=True)
    nearest = label[iy, ix]
    return sorted((component & (nearest == k) for k in range(1, len(parts) + 1)),
                  key=lambda m: -int(m.sum()))


def prompt_for(component: np.ndarray, pad_frac: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """SAM prompts for one change component: a box [4] (x1, y1, x2, y2, padded by pad_frac of
    its size, clipped to the image) and a positive point [2] (x, y) at the component's most
    interior pixel (distance-transform maximum), so the point lies inside even for C shapes."""
    h, w = component.shape
    ys, xs = np.nonzero(component)
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    px, py = pad_frac * (x2 - x1), pad_frac * (y2 - y1)
    box = np.array([max(0, x1 - px), max(0, y1 - py), min(w, x2 + px), min(h, y2 + py)],
                   dtype=np.float64)
    # Distance transform on the component's crop only: cheap for small components.
    crop = component[y1:y2, x1:x2]
    dist = ndi.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    point = np.array([x1 + cx + 0.5, y1 + cy + 0.5], dtype=np.float64)
    return box, point
