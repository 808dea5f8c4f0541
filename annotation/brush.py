"""Fast Label Studio brush RLE, byte-identical to label_studio_sdk.converter.brush.

Label Studio stores a brush mask as an RGBA image, flattened (H * W * 4 bytes, row-major,
channels last), run-length coded with thi.ng's rle-pack bit format:

    header : num values (32 bits) | word size - 1 (5 bits) | 4 x (run-length field size - 1) (4 bits)
    token  : flag (1 bit) | size class c (2 bits) | n - 1 (rle_sizes[c] bits) | payload
             flag 1: one value (word size bits) repeated n times
             flag 0: n literal values (word size bits each)
    the bit string is zero-padded to whole bytes; MSB first.

The official encoder (`mask2rle`) repeats every pixel value 4 times (R = G = B = A = value),
uses word size 8, rle_sizes [3, 4, 8, 16], emits only repeat tokens (a run of one value is
the literal form `0 00 000`), splits runs longer than 65536, and always appends 1..8 zero
bits (a whole zero byte when the length is already a multiple of 8). `mask_to_rle`
reproduces that exactly. `decode_flat` reproduces `decode_rle` on any stream (including
literal tokens and other word / field sizes, as Label Studio's front-end may write).

Everything is vectorized numpy (np.unpackbits / np.packbits for bits, np.diff-style run
detection) except one tight loop that follows the chain of token start positions: the
token boundaries depend on each other, so that walk is inherently sequential; it costs
one list lookup per token, never per pixel or per bit.
"""
from __future__ import annotations

import numpy as np

HEADER_BITS = 32 + 5 + 4 * 4
# mask2rle's fixed parameters: word size 8, run-length field sizes [3, 4, 8, 16].
_ENC_HEADER_TAIL = (8 - 1, (3 - 1, 4 - 1, 8 - 1, 16 - 1))
_MAX_RUN = 2**16


class BrushRLEError(ValueError):
    """Malformed brush RLE or a mask that cannot be encoded; the message says which and why."""


# --------------------------------------------------------------------------- encode
def _as_uint8_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise BrushRLEError(f"mask: expected a 2-D array [H, W], got shape {m.shape}")
    if m.size == 0:
        raise BrushRLEError(f"mask: empty array of shape {m.shape}")
    if m.dtype == np.bool_:
        return m.astype(np.uint8) * np.uint8(255)      # True -> 255: opaque in Label Studio
    if m.dtype == np.uint8:
        return m
    if np.issubdtype(m.dtype, np.integer):
        lo, hi = int(m.min()), int(m.max())
        if lo < 0 or hi > 255:
            raise BrushRLEError(f"mask: integer values must be in 0..255, got range {lo}..{hi}")
        return m.astype(np.uint8)
    raise BrushRLEError(f"mask: expected bool or integer (0..255) dtype, got {m.dtype}")


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Encode a mask as Label Studio brush RLE (a list of byte values).

    Args:
        mask: `[H, W]`, bool (True -> alpha 255, False -> 0) or integers in 0..255 (used
            as-is for all four RGBA channels, as `mask2rle` does with a uint8 mask).
    Returns:
        the same list of ints as `label_studio_sdk.converter.brush.mask2rle(mask_uint8)`.
    """
    flat = _as_uint8_mask(mask).ravel()
    n = flat.size
    # Runs of equal pixel values.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [n]))) * 4          # 4 channels per pixel
    values = flat[starts].astype(np.uint32)
    # Runs longer than 2**16 become full 2**16 chunks plus a remainder in 1..2**16.
    n_full = (lengths - 1) // _MAX_RUN
    per_run = n_full + 1
    tok_val = np.repeat(values, per_run)
    tok_len = np.full(tok_val.size, _MAX_RUN, dtype=np.int64)
    tok_len[np.cumsum(per_run) - 1] = lengths - n_full * _MAX_RUN
    # Token fields, as in encode_rle: the size class and the flag follow the whole run's
    # length (a run > 256 writes every chunk, its remainder too, with the 16-bit class);
    # a run of length 1 is the literal form '0 00 000'.
    run_cls = np.searchsorted(np.array([8, 16, 256]), lengths, side="left")  # <=8:0 <=16:1 <=256:2 else 3
    cls = np.repeat(run_cls, per_run)
    field_bits = np.array([3, 4, 8, 16], dtype=np.int64)[cls]
    flag = np.repeat((lengths > 1).astype(np.int64), per_run)
    code = (((flag << 2 | cls) << field_bits | (tok_len - 1)) << 8) | tok_val
    nbits = 3 + field_bits + 8                                    # 14, 15, 19 or 27
    # Left-align each code in 32 bits, unpack to bits, keep each token's first nbits.
    left = (code << (32 - nbits)).astype(">u4")
    bits = np.unpackbits(left.view(np.uint8).reshape(-1, 4), axis=1)
    body = bits[np.arange(32) < nbits[:, None]]
    header = _header_bits(4 * n, *_ENC_HEADER_TAIL)
    total = HEADER_BITS + body.size
    pad = np.zeros(8 - total % 8, dtype=np.uint8)                 # 1..8 zero bits, as encode_rle
    return np.packbits(np.concatenate((header, body, pad))).tolist()


def _header_bits(num: int, ws_minus_1: int, sizes_minus_1: tuple[int, ...]) -> np.ndarray:
    if num >= 2**32:
        raise BrushRLEError(f"mask: {num} RGBA values do not fit the 32-bit RLE length field")
    h = num
    h = (h << 5) | ws_minus_1
    for s in sizes_minus_1:
        h = (h << 4) | s
    return np.unpackbits(np.frombuffer((h << (64 - HEADER_BITS)).to_bytes(8, "big"), dtype=np.uint8))[:HEADER_BITS]


# --------------------------------------------------------------------------- decode
def _as_bytes(rle) -> np.ndarray:
    if isinstance(rle, (bytes, bytearray, memoryview)):
        data = np.frombuffer(bytes(rle), dtype=np.uint8)
    elif isinstance(rle, list) and (raw := _byte_list(rle)) is not None:
        data = np.frombuffer(raw, dtype=np.uint8)   # C-speed path for the usual input
    else:
        try:
            arr = np.asarray(rle)
        except (TypeError, ValueError) as e:
            raise BrushRLEError(f"rle: expected a list of byte values, got {type(rle).__name__}") from e
        if arr.ndim != 1:
            raise BrushRLEError(f"rle: expected a flat list of byte values, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise BrushRLEError(f"rle: expected integers 0..255, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise BrushRLEError(f"rle: values must be bytes 0..255, got range {arr.min()}..{arr.max()}")
        data = arr.astype(np.uint8)
    if data.size * 8 < HEADER_BITS:
        raise BrushRLEError(f"rle: {data.size} bytes is shorter than the {HEADER_BITS}-bit header")
    return data


def _byte_list(rle: list) -> bytes | None:
    try:
        return bytes(rle)   # accepts exactly ints in 0..255, at C speed
    except (TypeError, ValueError):
        return None         # the validating path names the problem


class _BitReader:
    """Vectorized reads of fields (<= 57 bits) at arbitrary bit positions."""

    def __init__(self, data: np.ndarray):
        # 8-byte big-endian window starting at every byte (plus zero windows past the end,
        # so speculative reads near the end of the data stay in bounds).
        padded = np.concatenate((data, np.zeros(16, dtype=np.uint8)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, 8)[: data.size + 8]
        self.win = np.ascontiguousarray(windows).view(">u8").ravel().astype(np.uint64)
        self.nbits = data.size * 8

    def read(self, pos: np.ndarray, width) -> np.ndarray:
        pos = np.asarray(pos, dtype=np.int64)
        w = self.win[pos >> 3] << (pos & 7).astype(np.uint64)
        return w >> (64 - np.asarray(width, dtype=np.int64)).astype(np.uint64)


def _parse(rle) -> tuple[int, np.ndarray, np.ndarray]:
    """Decode the token stream -> (num, segment values uint64, segment counts int64).

    Segments are (value, repeat) pairs in output order; their counts sum to >= num (a final
    repeat run may overshoot num and is truncated, as the official decoder's slice does).
    """
    data = _as_bytes(rle)
    rd = _BitReader(data)
    num = int(rd.read(0, 32)[()])
    ws = int(rd.read(32, 5)[()]) + 1
    sizes = np.array([int(rd.read(37 + 4 * k, 4)[()]) + 1 for k in range(4)], dtype=np.int64)
    if num == 0:
        return 0, np.zeros(0, np.uint64), np.zeros(0, np.int64)
    # Every bit position as a candidate token start: where would the next token begin?
    # A token's head (3 bits) and run-length field (<= 16 bits) fit in 32 bits read from any
    # bit offset (<= 7 + 19), so this per-bit pass works on uint32 windows.
    nb = data.size
    if nb >= 2**27:
        raise BrushRLEError(f"rle: {nb} bytes is too long for a brush mask")
    win4 = np.lib.stride_tricks.sliding_window_view(np.concatenate((data, np.zeros(3, np.uint8))), 4)
    win4 = np.ascontiguousarray(win4).view(">u4").ravel().astype(np.uint32)
    w = (win4[:, None] << np.arange(8, dtype=np.uint32)).ravel()[HEADER_BITS:]
    head = w >> np.uint32(29)
    flag = head >> np.uint32(2)
    s = sizes.astype(np.uint32)[head & np.uint32(3)]
    cnt = ((w << np.uint32(3)) >> (np.uint32(32) - s)).astype(np.int32) + 1
    step = (s + np.uint32(3)).astype(np.int32) + ws * np.where(flag == 1, 1, cnt)
    last_ok = rd.nbits - HEADER_BITS        # a token is complete if it ends within the data
    # One extra slot for position last_ok (the end of the data). Incomplete tokens and the
    # end lead to an out-of-range index (caught below) and count nothing, so the hot loop
    # needs no bounds checks.
    nxt = np.empty(step.size + 1, dtype=np.int32)
    np.add(np.arange(step.size, dtype=np.int32), step, out=nxt[:-1])   # relative to HEADER_BITS
    nxt[-1] = last_ok + 1
    cnt = np.append(cnt, np.int32(0))
    bad = nxt > last_ok
    nxt[bad] = nxt.size + 1
    cnt[bad] = 0
    # memoryviews index to Python ints without converting the whole arrays (tolist would
    # touch every bit position; the walk touches one per token).
    nxt_v, cnt_v = memoryview(nxt), memoryview(cnt)
    # Sequential walk over token starts (one iteration per token).
    starts: list[int] = []
    append = starts.append
    i = q = 0
    try:
        while i < num:
            append(q)
            i += cnt_v[q]
            q = nxt_v[q]
    except IndexError:
        raise BrushRLEError(f"rle: data ends after {i} of {num} values (truncated or malformed)") from None
    st = np.array(starts, dtype=np.int64)
    t_flag, t_s, t_cnt = flag[st].astype(np.int64), s[st].astype(np.int64), cnt[st].astype(np.int64)
    t_pos = st + HEADER_BITS + 3 + t_s
    if t_flag[-1] == 0 and i > num:
        raise BrushRLEError(f"rle: a literal run writes {i - num} values past the declared {num}")
    # Expand to segments: a repeat token is one segment, a literal token one per value.
    nseg = np.where(t_flag == 1, 1, t_cnt)
    tok = np.repeat(np.arange(st.size), nseg)
    k = np.arange(tok.size) - np.repeat(np.cumsum(nseg) - nseg, nseg)
    lit = t_flag[tok] == 0
    vals = rd.read(t_pos[tok] + ws * k * lit, ws)
    counts = np.where(lit, 1, t_cnt[tok])
    if vals.size and int(vals.max()) > 255:
        raise BrushRLEError(f"rle: value {int(vals.max())} does not fit a byte (word size {ws})")
    return num, vals, counts


def decode_flat(rle) -> np.ndarray:
    """Decode to the flat uint8 array `[num]` (H * W * 4 for a brush mask); the same array as
    `label_studio_sdk.converter.brush.decode_rle(rle)`."""
    num, vals, counts = _parse(rle)
    return np.repeat(vals.astype(np.uint8), counts)[:num]


def rle_to_alpha(rle, height: int, width: int) -> np.ndarray:
    """Decode to the alpha channel, uint8 `[height, width]` (channel 3 of decode_rle's RGBA)."""
    vals, px_counts = _alpha_segments(rle, height, width)
    return np.repeat(vals.astype(np.uint8), px_counts).reshape(height, width)


def rle_to_mask(rle, height: int, width: int, threshold: int = 0) -> np.ndarray:
    """Decode to a bool mask `[height, width]`: alpha (channel 3) > threshold.

    With the default threshold 0 any painted pixel counts; masks written by `mask_to_rle`
    round-trip exactly. Raises BrushRLEError for malformed RLE or a size mismatch.
    """
    vals, px_counts = _alpha_segments(rle, height, width)
    return np.repeat(vals > threshold, px_counts).reshape(height, width)


def _alpha_segments(rle, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(segment values, number of alpha pixels per segment) for an H x W brush mask."""
    if height < 1 or width < 1:
        raise BrushRLEError(f"height/width: expected positive sizes, got {height}x{width}")
    num, vals, counts = _parse(rle)
    if num != 4 * height * width:
        raise BrushRLEError(
            f"rle: encodes {num} values but height*width*4 = {height}*{width}*4 = {4 * height * width}"
        )
    # Alpha of pixel q is value index 4q + 3; the number of such indices below a value
    # index e is e // 4, so segment [b, e) holds e // 4 - b // 4 alpha values.
    px_ends = np.minimum(np.cumsum(counts), num) // 4
    return vals, np.diff(px_ends, prepend=0)
