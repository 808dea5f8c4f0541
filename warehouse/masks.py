"""Compressed mask codec for storage: COCO RLE via pycocotools.

`encode(mask)` takes a bool/uint8 array [H, W] and returns {"size": [H, W], "counts": str};
`decode(rle)` returns bool [H, W]. The warehouse stores the dict as JSON text (`to_json` /
`from_json`), parquet exports as a struct. Label Studio's brush RLE is a different codec and
lives in `annotation.brush`.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


class MaskError(ValueError):
    pass


def encode(mask: np.ndarray) -> dict[str, Any]:
    """bool/0-1 array [H, W] -> COCO RLE {"size": [H, W], "counts": str}."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise MaskError(f"mask must be 2-D [H, W], got shape {m.shape}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise MaskError(f"mask must be non-empty, got shape {m.shape}")
    rle = coco_mask.encode(np.asfortranarray(m.astype(bool).astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


# No image the platform accepts is larger (warehouse.images.DEFAULT_MAX_PIXELS): a mask that
# declares more is refused before anything is allocated, even when the caller cannot say which
# image it belongs to.
MAX_MASK_PIXELS = 40_000_000


def rle_size(rle: dict[str, Any] | str) -> tuple[int, int]:
    """The (H, W) an RLE declares, read without decoding it. Raises MaskError."""
    if isinstance(rle, str):
        rle = from_json(rle)
    try:
        h, w = (int(v) for v in rle["size"])
    except (KeyError, TypeError, ValueError) as e:
        raise MaskError(f"mask RLE `size` must be [height, width] ({type(e).__name__}: {e})") from None
    if h < 1 or w < 1:
        raise MaskError(f"mask RLE declares an empty size {[h, w]}")
    return h, w


def decode(rle: dict[str, Any] | str, expected_size: tuple[int, int] | None = None,
           max_pixels: int = MAX_MASK_PIXELS) -> np.ndarray:
    """COCO RLE (dict or its JSON text) -> bool [H, W]. Raises MaskError on a malformed RLE.

    The declared size is checked before any allocation: against `expected_size` (H, W) of the
    image the mask belongs to, when the caller knows it (pass it: a forged `size` of
    30000x30000 would otherwise cost gigabytes), and against `max_pixels` always."""
    if isinstance(rle, str):
        rle = from_json(rle)
    h, w = rle_size(rle)
    if expected_size is not None and (h, w) != tuple(expected_size):
        raise MaskError(f"mask RLE declares {w}x{h} (WxH) but its image is "
                        f"{expected_size[1]}x{expected_size[0]}")
    if h * w > max_pixels:
        raise MaskError(f"mask RLE declares {w}x{h} = {h * w:,} pixels, over the limit of {max_pixels:,}")
    size = [h, w]
    try:
        counts = rle["counts"]
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if isinstance(counts, list):  # uncompressed RLE
            obj = coco_mask.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        else:
            obj = {"size": size, "counts": counts}
        m = coco_mask.decode(obj)
    except MaskError:
        raise
    except Exception as e:  # pycocotools raises a mix of TypeError/ValueError/KeyError
        raise MaskError(f"cannot decode mask RLE ({type(e).__name__}: {e})") from e
    if m.shape != (size[0], size[1]):
        raise MaskError(f"mask RLE decodes to {m.shape}, expected {tuple(size)}")
    return m.view(bool) if m.dtype == np.uint8 else m.astype(bool)


def area(rle: dict[str, Any]) -> int:
    return int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def bbox_xyxy(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box [x1, y1, x2, y2) of a mask's True pixels (exclusive x2/y2); zeros if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(ys) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)


def to_json(rle: dict[str, Any]) -> str:
    return json.dumps({"size": list(rle["size"]), "counts": rle["counts"]}, separators=(",", ":"))


def from_json(text: str) -> dict[str, Any]:
    try:
        rle = json.loads(text)
    except json.JSONDecodeError as e:
        raise MaskError(f"mask RLE is not valid JSON: {e}") from e
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise MaskError("mask RLE must be an object with 'size' and 'counts'")
    return rle
