"""Decoding and checking what callers send to the scorer: images in any supported form, and
region specifications on the source image. Every problem raises `InvalidInput` with a message
naming the input and the problem (the scorer turns it into an invalid item, not a failed batch).
"""
from __future__ import annotations

import io
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from warehouse.images import DEFAULT_MAX_PIXELS, ImageRejected, ImageTooLarge, check_declared_size, open_image

KINDS = ("edit", "context", "background")
# Regions per item: each becomes a full-resolution bool mask plus a float copy while it is
# resized, so the count bounds an item's memory (the proposer keeps at most 12 by default;
# docs/serving.md).
DEFAULT_MAX_REGIONS = 32
NPY_MAGIC = b"\x93NUMPY"


class InvalidInput(ValueError):
    """One item cannot be scored; the message names the input and the problem."""


# --------------------------------------------------------------------------- results


@dataclass
class RegionInput:
    """A region on the source image: `mask` bool [H, W] at the source's size."""
    kind: str
    mask: np.ndarray
    region_id: str | None = None


def decode_image(image: Any, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any supported image -> uint8 RGB array [H, W, 3]. Raises InvalidInput."""
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not p.is_file():
            raise InvalidInput(f"{name}: file {str(p)!r} does not exist")
        image = p.read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise InvalidInput(f"{name}: empty bytes")
        image = decode_npy(data, name, max_pixels) if data.startswith(NPY_MAGIC) \
            else _decode_encoded(data, name, max_pixels)
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        arr = np.asarray(image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise InvalidInput(f"{name}: tensor must be [3, H, W] (or [1, H, W]), got {tuple(t.shape)}")
        if t.is_floating_point():
            if not torch.isfinite(t).all():
                raise InvalidInput(f"{name}: tensor has non-finite values")
            t = (t.clamp(0, 1) * 255).round()
        arr = t.to(torch.uint8).permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            raise InvalidInput(f"{name}: array must be uint8 [H, W, 3], got dtype {arr.dtype}")
    else:
        raise InvalidInput(f"{name}: unsupported image type {type(image).__name__}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InvalidInput(f"{name}: expected [H, W, 3], got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[:, :, :3]
    if min(arr.shape[:2]) < 1:
        raise InvalidInput(f"{name}: image is empty {arr.shape}")
    return np.ascontiguousarray(arr)


def _decode_encoded(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """PNG/JPEG/WebP/... bytes -> PIL image (EXIF rotation applied), size checked first by the
    platform's one decompression-bomb guard (warehouse.images.open_image)."""
    try:
        img = open_image(data, name, max_pixels)
        img.load()
        return ImageOps.exif_transpose(img)
    except ImageTooLarge as e:
        raise InvalidInput(str(e)) from None
    except ImageRejected as e:
        raise InvalidInput(f"{name}: cannot decode image bytes ({str(e).removeprefix(name + ': ')})") from None
    except Exception as e:  # PIL raises many types for corrupt data
        raise InvalidInput(f"{name}: cannot decode image bytes ({type(e).__name__}: {e})") from None


_NPY_SHAPE = re.compile(rb"'shape':\s*\(\s*(\d+)\s*,\s*(\d+)")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) an encoded image or .npy declares in its header, without decoding pixels;
    None when the header is unreadable (decoding will refuse it anyway). For admission control,
    so the common cases are read directly (~1 us; numpy's and PIL's header parsers take
    ~50-100 us, and a request carries up to 65 images)."""
    try:
        if data.startswith(NPY_MAGIC):   # magic, version, header length, then the header dict
            m = _NPY_SHAPE.search(data, 10, 10 + 4096)
            return (int(m.group(2)), int(m.group(1))) if m else None
        if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Exception:
        return None


def decode_npy(data: bytes, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """NumPy .npy bytes of a uint8 [H, W, 3] (or [H, W], [H, W, 1|4]) array, without pickle.

    Lossless and far cheaper to encode and decode than PNG: the client's default for trainers
    on the same network. The header is checked before any allocation (a forged shape cannot
    make the server allocate more than the bytes it received)."""
    fp = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(fp)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fp)
    except Exception as e:
        raise InvalidInput(f"{name}: malformed .npy header ({e})") from None
    if dtype != np.uint8:
        raise InvalidInput(f"{name}: .npy array must be uint8, got {dtype}")
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise InvalidInput(f"{name}: .npy array must be [H, W, 3], got shape {shape}")
    try:   # the same pixel limit as encoded images (warehouse.images)
        check_declared_size(shape[1], shape[0], name, max_pixels)
    except ImageTooLarge as e:
        raise InvalidInput(str(e)) from None
    count = int(np.prod(shape))
    offset = fp.tell()
    if len(data) - offset != count:
        raise InvalidInput(f"{name}: .npy holds {len(data) - offset} data bytes, its shape {shape} needs {count}")
    arr = np.frombuffer(data, np.uint8, count, offset).reshape(shape, order="F" if fortran else "C")
    return np.ascontiguousarray(arr)


def _mask_from(spec: Any, height: int, width: int, name: str) -> np.ndarray:
    """The bool [height, width] mask of one region spec; an RLE's declared size is checked
    against the source before anything is allocated."""
    from warehouse import masks as mask_codec

    mask = spec.get("mask") if isinstance(spec, dict) else getattr(spec, "mask", None)
    bbox = spec.get("bbox") if isinstance(spec, dict) else getattr(spec, "bbox", None)
    if mask is None and bbox is None:
        raise InvalidInput(f"{name}: needs a `mask` (COCO RLE or bool array) or a `bbox`")
    if mask is not None:
        if isinstance(mask, (dict, str)):
            try:
                m = mask_codec.decode(mask, expected_size=(height, width))
            except mask_codec.MaskError as e:
                raise InvalidInput(f"{name}: {e}") from None
        elif isinstance(mask, torch.Tensor):
            m = mask.detach().cpu().numpy().astype(bool)
        else:
            m = np.asarray(mask).astype(bool)
        if m.shape != (height, width):
            raise InvalidInput(f"{name}: mask is {m.shape[::-1] if m.ndim == 2 else m.shape} (WxH) "
                               f"but the source is {width}x{height}")
        return m
    try:
        x1, y1, x2, y2 = (int(v) for v in bbox)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}: bbox must be [x1, y1, x2, y2], got {bbox!r}") from None
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    if x2 <= x1 or y2 <= y1:
        raise InvalidInput(f"{name}: bbox {list(bbox)} is empty inside a {width}x{height} image")
    m = np.zeros((height, width), bool)
    m[y1:y2, x1:x2] = True
    return m


def normalize_regions(regions: Sequence[Any] | None, height: int, width: int,
                      max_regions: int = DEFAULT_MAX_REGIONS) -> list[RegionInput]:
    """Check regions against a source of size (height, width); background last.

    Each region is a dict or object with `kind` and `mask` (bool [H, W] or COCO RLE) or `bbox`,
    optionally `region_id`. Without a background region one is added as the complement of the
    union of the others (when that complement is non-empty). `None` or [] means one background
    region covering the whole image (image-level scoring). More than `max_regions` regions, or
    two with the same region_id, raise InvalidInput before any mask is decoded.
    """
    regions = list(regions or [])
    if len(regions) > max_regions:
        raise InvalidInput(f"{len(regions)} regions; at most {max_regions} per item")
    ids = [spec.get("region_id") if isinstance(spec, dict) else getattr(spec, "region_id", None)
           for spec in regions]
    named = [str(r) for r in ids if r is not None]
    dup = sorted({r for r in named if named.count(r) > 1})
    if dup:
        raise InvalidInput(f"duplicate region_id(s) {dup[:5]}; each region of an item needs its own id")
    out: list[RegionInput] = []
    for i, spec in enumerate(regions):
        name = f"region {i}"
        kind = spec.get("kind") if isinstance(spec, dict) else getattr(spec, "kind", None)
        if kind not in KINDS:
            raise InvalidInput(f"{name}: kind must be one of {list(KINDS)}, got {kind!r}")
        m = _mask_from(spec, height, width, name)
        if not m.any():
            if kind == "background":  # edit/context regions cover the image: nothing left over
                continue
            raise InvalidInput(f"{name}: mask is empty")
        rid = spec.get("region_id") if isinstance(spec, dict) else getattr(spec, "region_id", None)
        out.append(RegionInput(kind, m, str(rid) if rid is not None else None))
    backgrounds = [r for r in out if r.kind == "background"]
    if len(backgrounds) > 1:
        raise InvalidInput(f"regions: {len(backgrounds)} background regions; exactly one is allowed")
    others = [r for r in out if r.kind != "background"]
    if not backgrounds:
        union = np.zeros((height, width), bool)
        for r in others:
            union |= r.mask
        if not union.all():
            backgrounds = [RegionInput("background", ~union, None)]
    out = others + backgrounds
    for i, r in enumerate(out):
        if r.region_id is None:
            r.region_id = "background" if r.kind == "background" else f"r{i}"
    final = [r.region_id for r in out]
    if len(set(final)) != len(final):  # a supplied id equal to a generated one ("r1", "background")
        raise InvalidInput(f"region_ids {final} collide with the generated ones; name every region")
    return out


def mask_bbox(m: np.ndarray) -> list[int]:
    """[x1, y1, x2, y2] of a bool [H, W] mask's pixels (x2, y2 exclusive)."""
    from warehouse import masks as mask_codec

    return list(mask_codec.bbox_xyxy(m))


def region_meta(r: RegionInput) -> tuple[str, str, list[int], int]:
    """(region_id, kind, bbox, area in source pixels) of a normalized region."""
    # count_nonzero: mask.sum() first casts the whole bool mask to int64 (~7x slower)
    return (str(r.region_id), r.kind, mask_bbox(r.mask), int(np.count_nonzero(r.mask)))


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """bool [K, H, W] -> bool [K, h, w]. A model pixel belongs to a region when the region
    covers at least half of it; a small region that would vanish keeps every pixel it touches."""
    masks = np.ascontiguousarray(masks)
    if masks.dtype == np.bool_:  # same 0/1 values; torch converts uint8 to float ~8x faster than bool
        masks = masks.view(np.uint8)
    t = torch.from_numpy(masks).float()[None]
    cov = F.adaptive_avg_pool2d(t, size)[0] if t.shape[-2] >= size[0] and t.shape[-1] >= size[1] \
        else F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0]
    out = cov >= 0.5
    empty = ~out.flatten(1).any(1)
    if empty.any():
        out[empty] = cov[empty] > 0
    return out


def to_model_tensor(arr: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, h, w] in [0, 1], bilinear (antialiased) resize.

    The resize runs on the uint8 pixels with torch's antialiased bilinear kernel: PIL's
    Image.resize(BILINEAR) values (at most 1/255 apart, in under 0.1% of pixels), ~4x faster.
    The server does this for every upload, on threads that compete for the GIL."""
    h, w = size
    if not arr.flags.writeable:  # read-only buffers (np.frombuffer, PIL): torch wants to own one
        arr = arr.copy()
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)   # [3, H, W] uint8 view
    if t.shape[1:] != (h, w):
        t = F.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    return t.float().div_(255.0)


# --------------------------------------------------------------------------- scorer
