"""Pixel operations of the synthetic editor, each confined to a mask.

Every function takes a float image [H, W, 3] in [0, 1] and a bool mask [H, W] and returns a new
image equal to the input outside the mask (bit for bit), so untouched regions stay identical.
`strength` / `severity` are in [0, 1].
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import color

from sfreward.synthetic.scene import PALETTE

# Instructed edits: op name -> (GEdit-style category, instruction templates).
EDIT_OPS = {
    "recolor": ("color_alter", ["Recolor {r} to {c}.", "Make {r} {c}.", "Change the color of {r} to {c}."]),
    "brighten": ("tone_transfer", ["Brighten {r}.", "Make {r} brighter."]),
    "darken": ("tone_transfer", ["Darken {r}.", "Make {r} darker."]),
    "desaturate": ("color_alter", ["Make {r} black and white.", "Remove the color from {r}."]),
}
ARTIFACTS = ["blur", "noise", "blocky", "color_bleed"]
UNINTENDED = ["hue_shift", "brightness", "contrast"]


def _paste(img: np.ndarray, new: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[mask] = np.clip(new[mask], 0, 1)
    return out


def edit_applicable(op: str, img: np.ndarray, mask: np.ndarray) -> bool:
    """Whether `op` would visibly change the region (no brightening a white region)."""
    hsv = color.rgb2hsv(img)[mask]
    if op == "brighten":
        return hsv[:, 2].mean() < 0.75
    if op == "darken":
        return hsv[:, 2].mean() > 0.25
    if op == "desaturate":
        return hsv[:, 1].mean() > 0.25
    return True


def apply_edit(img: np.ndarray, mask: np.ndarray, op: dict, strength: float = 1.0) -> np.ndarray:
    """The instructed edit `op` ({"op": "recolor", "color": "blue"} etc.) blended in with
    `strength` (1 = fully done, 0 = nothing)."""
    kind = op["op"]
    if kind == "recolor":
        hsv = color.rgb2hsv(img)
        hsv[..., 0] = PALETTE[op["color"]] / 360.0
        hsv[..., 1] = np.maximum(hsv[..., 1], 0.65)
        hsv[..., 2] = np.maximum(hsv[..., 2], 0.35)  # a dark region would stay black otherwise
        target = color.hsv2rgb(hsv)
    elif kind == "brighten":
        target = img + (1 - img) * 0.5
    elif kind == "darken":
        target = img * 0.5
    elif kind == "desaturate":
        gray = color.rgb2gray(img)[..., None]
        target = np.repeat(gray, 3, axis=2)
    else:
        raise ValueError(f"unknown edit op {kind!r}; known: {sorted(EDIT_OPS)}")
    return _paste(img, (1 - strength) * img + strength * target, mask)


def apply_artifact(img: np.ndarray, mask: np.ndarray, kind: str, severity: float,
                   rng: np.random.Generator) -> np.ndarray:
    """A rendering artifact inside the mask: blur, noise, blocky patches or colour bleeding."""
    if kind == "blur":
        new = ndimage.gaussian_filter(img, sigma=(1.5 + 3 * severity, 1.5 + 3 * severity, 0))
    elif kind == "noise":
        new = img + rng.normal(0, 0.05 + 0.12 * severity, img.shape)
    elif kind == "blocky":
        b = int(6 + 10 * severity)
        h, w = img.shape[:2]
        small = img[::b, ::b]
        new = np.repeat(np.repeat(small, b, 0), b, 1)[:h, :w]
    elif kind == "color_bleed":
        # Chroma displaced against luma, as when a decoder misaligns colour planes.
        ycc = color.rgb2ycbcr(img)
        shift = int(4 + 8 * severity)
        ycc[..., 1:] = np.roll(ycc[..., 1:], (shift, shift), axis=(0, 1))
        ycc[..., 1:] = 128 + (ycc[..., 1:] - 128) * (1.3 + severity)
        new = color.ycbcr2rgb(ycc)
    else:
        raise ValueError(f"unknown artifact {kind!r}; known: {ARTIFACTS}")
    return _paste(img, new, mask)


def apply_unintended(img: np.ndarray, mask: np.ndarray, kind: str, severity: float) -> np.ndarray:
    """A plausible-looking change nobody asked for: hue, brightness or contrast."""
    if kind == "hue_shift":
        hsv = color.rgb2hsv(img)
        hsv[..., 0] = (hsv[..., 0] + 0.12 + 0.25 * severity) % 1.0
        hsv[..., 1] = np.maximum(hsv[..., 1], 0.3)  # grey regions would not show a hue change
        new = color.hsv2rgb(hsv)
    elif kind == "brightness":
        new = img + (0.12 + 0.2 * severity) * (1 if img[mask].mean() < 0.5 else -1)
    elif kind == "contrast":
        mean = img[mask].mean(0)
        new = mean + (img - mean) * (0.2 + 0.3 * (1 - severity)) + 0.08
    else:
        raise ValueError(f"unknown unintended change {kind!r}; known: {UNINTENDED}")
    return _paste(img, new, mask)


def region_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference of two float images over the mask (0..1 units)."""
    return float(np.abs(a[mask] - b[mask]).mean()) if mask.any() else 0.0
