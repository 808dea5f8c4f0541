"""Admission control of the reward server: a budget of memory for decoded pixels.

A request of a few kilobytes can declare images of 40 MP each and up to 64 of them (a solid
PNG compresses ~1000:1); decoded, that is gigabytes. Before any pixel is decoded the server
estimates what a request will hold from the sizes the images declare in their headers
(`request_cost`), and admits it only when the estimate fits in what is left of the budget
(`DecodeBudget`); otherwise it answers 503 with Retry-After, and a request that could never
fit (larger than the whole budget) gets 413. The charge is returned when the request's
full-resolution arrays are dropped (after preparation, before the model call).
"""
from __future__ import annotations

import threading
from typing import Sequence

from sfreward.inputs import header_size

# Bytes per pixel, from the peak RSS of this code path on a 3000x3000 PNG (VmHWM): a decoded
# RGB image is held at 3 B/px while its group is prepared; decoding one image passes through
# PIL's 4 B/px buffer, its copies and the model-size resize (~17 B/px at once, one image at a
# time); each region holds a bool mask and a float copy while masks are resized (~5-6 B/px per
# region, at the source's size). Encoded bytes count twice (base64 text and decoded bytes).
HELD_PER_PIXEL = 3
DECODE_PER_PIXEL = 20
REGION_PER_PIXEL = 6
DEFAULT_BUDGET_BYTES = 2 << 30   # 2 GiB of decoded data across all requests in preparation


def request_cost(source: bytes, edits: Sequence[bytes], n_regions: int) -> int:
    """Estimated peak bytes of preparing one group: `source` and `edits` are the encoded images
    (PNG/JPEG/.npy bytes), `n_regions` the masks it will hold at the source's size (background
    included). Read from the headers only; an unreadable header counts 0 (it is refused fast)."""
    pixels = [_pixels(source)] + [_pixels(e) for e in edits]
    return (HELD_PER_PIXEL * sum(pixels) + DECODE_PER_PIXEL * max(pixels)
            + REGION_PER_PIXEL * n_regions * pixels[0] + 2 * (len(source) + sum(len(e) for e in edits)))


def _pixels(data: bytes) -> int:
    size = header_size(data)
    return size[0] * size[1] if size else 0


class DecodeBudget:
    """A counter of bytes admitted and not yet released, bounded by `capacity` (bytes).
    Thread-safe; `try_acquire` never blocks."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"decode budget must be >= 1 byte, got {capacity}")
        self.capacity = capacity
        self.in_use = 0
        self._lock = threading.Lock()

    def fits_at_all(self, cost: int) -> bool:
        """Whether a request of `cost` bytes could ever be admitted (on an idle server)."""
        return cost <= self.capacity

    def try_acquire(self, cost: int) -> bool:
        """Charge `cost` bytes if they fit in what is left; False (nothing charged) otherwise."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost}")
        with self._lock:
            if self.in_use + cost > self.capacity:
                return False
            self.in_use += cost
            return True

    def release(self, cost: int) -> None:
        with self._lock:
            if cost < 0 or cost > self.in_use:
                raise ValueError(f"releasing {cost} bytes but only {self.in_use} are in use")
            self.in_use -= cost
