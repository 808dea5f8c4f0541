"""Validating and normalizing one image file for ingestion.

`load_image(data, name)` decodes bytes defensively and returns a `CheckedImage`: the RGB pixels'
size, the bytes to store (the original when it already is plain 8-bit RGB PNG/JPEG without an
EXIF rotation, else a lossless RGB PNG) and a note saying what was converted. Every rejection
raises `ImageRejected` with a message naming the input and the problem.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Above this many pixels a file is refused before it is decoded (decompression bombs).
DEFAULT_MAX_PIXELS = 40_000_000
MIN_SIDE = 8


class ImageRejected(ValueError):
    pass


class ImageTooLarge(ImageRejected):
    """The declared size exceeds the pixel limit (refused from the header)."""


# Magic bytes of the formats we accept, checked on a file's first bytes before reading it whole.
MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
         (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))
HEAD_BYTES = 16


def sniff_format(head: bytes) -> str | None:
    """The image format a file's first bytes announce (PNG, JPEG, GIF, TIFF, BMP, WEBP), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in MAGIC if head.startswith(magic)), None)


def open_image(data: bytes | BinaryIO, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The one decompression-bomb guard (ingest, provided mask images and the reward server all
    use it; the warehouse is the lowest layer, so it lives here): open an image lazily, reading
    only its header, and refuse it when the declared size exceeds `max_pixels`, before any pixel
    is decoded. Raises ImageRejected naming `name`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(data if not isinstance(data, (bytes, bytearray)) else io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected(f"{name}: not a recognized image file (wrong magic bytes or not an image)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"{name}: decompression bomb refused ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageRejected(f"{name}: image is corrupt or truncated in its header ({e})") from None
    check_declared_size(*img.size, name, max_pixels)   # from the header, before decoding any pixel
    return img


def check_declared_size(width: int, height: int, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """The one pixel limit of the platform: refuse an image whose declared width x height
    (from a header: PNG/JPEG/..., a .npy array's shape, a mask image) exceeds `max_pixels`,
    before anything is decoded or allocated. Raises ImageTooLarge naming `name`."""
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name}: declared size {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (possible decompression bomb); resize it or raise max_pixels")


@dataclass(frozen=True)
class CheckedImage:
    width: int
    height: int
    format: str          # format of the stored bytes
    original_mode: str
    stored: bytes
    note: str | None


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit int) grayscale: scale the full range to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB"), f"converted {mode} (16-bit) -> RGB 8-bit"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white so transparent pixels do not turn into arbitrary colors.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB"), f"converted {mode} -> RGB (alpha composited on white)"
    if mode == "F":
        raise ImageRejected("floating-point images are not supported; export 8-bit or 16-bit PNG")
    return img.convert("RGB"), f"converted {mode} -> RGB"


def load_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> CheckedImage:
    """Decode and check one image. `name` is only used in messages."""
    if len(data) == 0:
        raise ImageRejected(f"{name}: file is empty (0 bytes)")
    img = open_image(data, name, max_pixels)
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageRejected(f"{name}: image is {w}x{h}, smaller than {MIN_SIDE} px on a side")
    try:
        n_frames = getattr(img, "n_frames", 1)
        if n_frames > 1:
            raise ImageRejected(f"{name}: animated/multi-frame image ({n_frames} frames); export one still frame")
        fmt = img.format or "UNKNOWN"
        original_mode = img.mode
        img.load()  # full decode: truncated files fail here
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageRejected(f"{name}: image is corrupt or truncated ({e})") from None

    notes = []
    transposed = ImageOps.exif_transpose(img)
    if transposed is not img and transposed.size != img.size or _has_rotation(img):
        notes.append("EXIF orientation applied")
    img = transposed if transposed is not None else img
    rgb, note = _to_rgb(img)
    if note:
        notes.append(note)
    if not notes and fmt in ("PNG", "JPEG"):
        return CheckedImage(rgb.width, rgb.height, fmt, original_mode, data, None)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return CheckedImage(rgb.width, rgb.height, "PNG", original_mode, buf.getvalue(), "; ".join(notes))


def _has_rotation(img: Image.Image) -> bool:
    try:
        return img.getexif().get(0x0112, 1) not in (1, None)
    except Exception:
        return False


def decode_rgb(data: bytes) -> np.ndarray:
    """Stored image bytes -> uint8 [H, W, 3]."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))
