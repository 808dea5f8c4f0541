"""Source photos and their regions for synthetic editing samples.

A `Scene` is one square source photo (float RGB [H, W, 3] in [0, 1]) with a few large regions
found from the image structure (Felzenszwalb segments, SLIC superpixels as a fallback) plus the
background (the complement of their union, always last). Regions are named by colour and position
("the orange region in the upper left") because their semantics are unknown.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color, data
from skimage.segmentation import felzenszwalb, slic
from skimage.transform import resize

log = logging.getLogger(__name__)

# Colour photos that ship inside scikit-image (no download). `camera` and `coins` are grey and
# would make recolour instructions the only visible edit; they are left out on purpose.
SKIMAGE_SOURCES = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
                   "hubble_deep_field", "retina", "colorwheel"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

# Hue (degrees) of each colour name used in instructions.
PALETTE = {"red": 0, "orange": 30, "yellow": 55, "green": 120, "cyan": 180, "blue": 225,
           "purple": 275, "pink": 320}


@dataclass
class Scene:
    """One source photo with its regions.

    image: float32 [H, W, 3] in [0, 1]; masks: bool [K, H, W], background last; kinds are
    assigned later per instruction ('edit' / 'context' / 'background')."""
    name: str
    image: np.ndarray
    masks: np.ndarray
    names: list[str] = field(default_factory=list)

    @property
    def n_regions(self) -> int:
        return int(self.masks.shape[0])


def load_sources(source_dir: str | Path | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 [H, W, 3]) for every usable photo: scikit-image's bundled colour photos, or
    the images in `source_dir` (sorted by name; unreadable files are skipped with a warning)."""
    if source_dir is None:
        return [(n, np.asarray(getattr(data, n)())[..., :3]) for n in SKIMAGE_SOURCES]
    root = Path(source_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist or is not a directory")
    out = []
    for p in sorted(root.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(p) as im:
                out.append((p.stem, np.asarray(im.convert("RGB"))))
        except Exception as e:  # one bad file must not stop the batch
            log.warning("skipping source image %s: %s", p, e)
    if not out:
        raise ValueError(f"source folder {root} holds no readable images ({sorted(IMAGE_SUFFIXES)})")
    return out


def square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize: uint8 [h, w, 3] -> float32 [size, size, 3] in [0, 1],
    quantized to 8 bits so that saving as PNG is lossless."""
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    out = resize(crop, (size, size), anti_aliasing=True, preserve_range=True)
    if crop.dtype == np.uint8:
        out = out / 255.0
    out = np.clip(out, 0, 1)
    return (np.round(out * 255) / 255).astype(np.float32)


def _clean(mask: np.ndarray) -> np.ndarray:
    """Largest connected component with holes filled: one solid object-like region."""
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
    return ndimage.binary_fill_holes(lab == (int(np.argmax(sizes)) + 1))


def propose_regions(img: np.ndarray, n_regions: int, min_frac: float = 0.03,
                    max_frac: float = 0.3, gap: int = 3) -> list[np.ndarray]:
    """Up to `n_regions` large, mutually separated regions of float [H, W, 3] `img`.

    Felzenszwalb segments come first (they follow object boundaries), SLIC superpixels fill in
    when the photo has too few; a candidate must cover `min_frac`..`max_frac` of the image and
    stay `gap` pixels away from the regions already chosen so that regions never touch."""
    h, w = img.shape[:2]
    fz = felzenszwalb(img, scale=1.5 * h, sigma=0.8, min_size=max(16, h * w // 400))
    sl = slic(img, n_segments=16, compactness=10, start_label=0, channel_axis=-1)
    candidates = []
    for seg in (fz, sl):
        areas = np.bincount(seg.ravel())
        for label in np.argsort(-areas, kind="stable"):
            m = _clean(seg == label)
            if min_frac * h * w <= m.sum() <= max_frac * h * w:
                candidates.append(m)
    chosen: list[np.ndarray] = []
    taken = np.zeros((h, w), bool)
    for m in candidates:
        grown = ndimage.binary_dilation(m, iterations=gap)
        if (grown & taken).any():
            continue
        chosen.append(m)
        taken |= grown
        if len(chosen) == n_regions:
            break
    return chosen


def color_name(rgb: np.ndarray) -> str:
    """A plain colour word for a mean RGB triple in [0, 1]."""
    h, s, v = color.rgb2hsv(np.asarray(rgb, np.float64).reshape(1, 1, 3))[0, 0]
    if v < 0.2:
        return "dark"
    if s < 0.18:
        return "white" if v > 0.8 else "gray"
    deg = h * 360
    for limit, name in ((15, "red"), (40, "orange"), (70, "yellow"), (160, "green"), (200, "cyan"),
                        (255, "blue"), (290, "purple"), (345, "pink")):
        if deg < limit:
            return name
    return "red"


def position_name(mask: np.ndarray) -> str:
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    row = min(2, int(3 * ys.mean() / h))
    col = min(2, int(3 * xs.mean() / w))
    return [["in the upper left", "at the top", "in the upper right"],
            ["on the left", "in the center", "on the right"],
            ["in the lower left", "at the bottom", "in the lower right"]][row][col]


def describe(img: np.ndarray, masks: list[np.ndarray]) -> list[str]:
    """Distinct names such as 'the orange region in the upper left' for each mask."""
    names = [f"the {color_name(img[m].mean(0))} region {position_name(m)}" for m in masks]
    for i, n in enumerate(names):
        dup = [j for j, o in enumerate(names) if o == n]
        if len(dup) > 1:  # same colour and place: tell them apart by size
            order = sorted(dup, key=lambda j: -masks[j].sum())
            for rank, j in enumerate(order):
                names[j] = n.replace("the ", f"the {('larger', 'smaller', 'third')[min(rank, 2)]} ", 1)
    return names


def make_scene(name: str, photo: np.ndarray, size: int, n_regions: int) -> Scene:
    """Square `photo` (uint8 [h, w, 3]) to `size` and find its regions; raises ValueError when
    fewer than two separated regions exist (too little structure to write instructions)."""
    img = square(photo, size)
    regs = propose_regions(img, n_regions)
    if len(regs) < 2:
        raise ValueError(f"source {name!r} has too little structure: found {len(regs)} region(s), need 2")
    background = ~np.any(regs, axis=0)
    masks = np.stack(regs + [background])
    return Scene(name=name, image=img, masks=masks, names=describe(img, regs) + ["the background"])


def procedural_photo(seed: int, size: int = 256) -> np.ndarray:
    """A procedural 'photo' (uint8 [size, size, 3]) that no installed package ships: a two-colour
    gradient ground with fine texture and 3-5 textured objects (ellipses, boxes, blobs) of distinct
    saturated colours. Deterministic per seed; different seeds give unrelated layouts, so they are
    distinct sources for the split grouping (never near-duplicates of each other or of a photo)."""
    rng = np.random.default_rng([7919, seed])
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0.25, 0.85, 3), rng.uniform(0.25, 0.85, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)[..., None]
    img = (1 - t) * c0 + t * c1
    img += ndimage.gaussian_filter(rng.normal(0, 0.06, (size, size)), 1.2)[..., None]
    hues = rng.permutation(np.linspace(0, 1, 8, endpoint=False))
    for k in range(int(rng.integers(3, 6))):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        ry, rx = rng.uniform(0.09, 0.2, 2)
        shape = rng.integers(3)
        if shape == 0:      # ellipse
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        elif shape == 1:    # box
            m = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        else:               # blob: a smoothed random field thresholded inside an ellipse
            field = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 16)
            m = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.6) & (field > -0.3 * field.std())
        hsv = np.array([hues[k], rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95)])
        base = color.hsv2rgb(hsv.reshape(1, 1, 3))[0, 0]
        period = rng.uniform(0.02, 0.06)      # stripes: blur and blockiness must show
        stripes = 0.08 * np.sin(2 * np.pi * (xx * np.cos(k) + yy * np.sin(k)) / period)
        img[m] = base + stripes[m][:, None] + rng.normal(0, 0.02, (int(m.sum()), 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
