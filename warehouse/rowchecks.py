"""Checks on one ingest row that need no warehouse: bounds on its text fields, standard JSON,
and image files checked from their size, magic bytes and header before being read whole.
Every problem raises `RowRejected` with a message naming the field or file and the limit.

The limits are documented in docs/hostile-inputs.md; the reward server applies the same text
limits (sfreward.server.payload), since captured rollouts are ingested.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from warehouse.images import HEAD_BYTES, ImageRejected, open_image, sniff_format

MAX_INSTRUCTION_CHARS = 2000
MAX_ID_CHARS = 128                  # sample_id, group_id, editor, category
MAX_METADATA_BYTES = 16_384         # metadata as JSON text
DEFAULT_MAX_FILE_BYTES = 256 << 20  # an image file larger than this is refused before reading it
_LIMITS = {"instruction": MAX_INSTRUCTION_CHARS}


class RowRejected(ValueError):
    pass


class NonStandardJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise NonStandardJSON(f"{name} is not valid JSON")


def loads_row(text: str) -> Any:
    """json.loads that refuses NaN/Infinity (NonStandardJSON); JSONDecodeError and
    RecursionError (nesting deeper than the parser's stack) pass through to the caller."""
    return json.loads(text, parse_constant=_refuse_constant)


def check_text(field: str, value: str) -> None:
    """A text field within its length limit and without NUL characters."""
    limit = _LIMITS.get(field, MAX_ID_CHARS)
    if len(value) > limit:
        raise RowRejected(f"`{field}` has {len(value):,} characters; at most {limit:,}")
    if "\x00" in value:
        raise RowRejected(f"`{field}` contains a NUL character")


def metadata_json(metadata: dict) -> str:
    """Metadata as canonical JSON text; NaN/Infinity (parquet floats), NUL characters, values
    that are not JSON and more than MAX_METADATA_BYTES are refused."""
    try:
        text = json.dumps(metadata, sort_keys=True, allow_nan=False)
    except ValueError as e:
        raise RowRejected(f"`metadata` holds a value that is not standard JSON ({e}); use null or a string") from None
    except TypeError as e:
        raise RowRejected(f"`metadata` holds a value that is not JSON ({e})") from None
    except RecursionError:
        raise RowRejected("`metadata` is nested too deeply") from None
    if "\\u0000" in text:  # json.dumps escapes NUL as \u0000
        raise RowRejected("`metadata` contains a NUL character")
    n = len(text.encode())
    if n > MAX_METADATA_BYTES:
        raise RowRejected(f"`metadata` is {n:,} bytes as JSON; at most {MAX_METADATA_BYTES:,}")
    return text


def check_head(size: int, head: bytes, name: str, max_file_bytes: int) -> None:
    """An image file's size and magic bytes (its first HEAD_BYTES bytes)."""
    if size == 0:
        raise RowRejected(f"{name}: file is empty (0 bytes)")
    if size > max_file_bytes:
        raise RowRejected(f"{name}: file is {size:,} bytes, over the limit of {max_file_bytes:,} bytes for one "
                          "image; resize or recompress it")
    if sniff_format(head) is None:
        raise RowRejected(f"{name}: not a recognized image file (its first bytes {head[:8].hex(' ')} "
                          "are not PNG, JPEG, WebP, TIFF, BMP or GIF)")


def read_checked(path: Path, name: str, max_file_bytes: int, max_pixels: int) -> bytes:
    """The file's bytes, read whole only after its size, magic bytes and declared pixel count
    passed (a 1.5 GB file named .png costs one fstat and a 16-byte read). OSError passes."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        check_head(size, fh.read(HEAD_BYTES), name, max_file_bytes)
        fh.seek(0)
        try:
            open_image(fh, name, max_pixels)   # the header only
        except ImageRejected as e:
            raise RowRejected(str(e)) from None
        fh.seek(0)
        data = fh.read(size + 1)
    if len(data) != size:
        raise RowRejected(f"{name}: file changed size while it was read ({size:,} -> {len(data):,} bytes)")
    return data
