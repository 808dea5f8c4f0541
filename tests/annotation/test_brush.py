"""annotation.brush against Label Studio's official codec (label_studio_sdk.converter.brush)."""
from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter import brush as official
from skimage import data, segmentation, transform

from annotation.brush import BrushRLEError, decode_flat, mask_to_rle, rle_to_alpha, rle_to_mask


def official_encode(mask: np.ndarray) -> list[int]:
    u = mask.astype(np.uint8) * 255 if mask.dtype == bool else mask
    return official.mask2rle(u)


def assert_same_as_official(mask: np.ndarray) -> None:
    """Encode and decode both ways and compare with the official codec, byte for byte."""
    ours = mask_to_rle(mask)
    ref = official_encode(mask)
    assert ours == ref, f"encode differs for mask {mask.shape} {mask.dtype}"
    flat = official.decode_rle(ref)
    assert np.array_equal(decode_flat(ref), flat)
    alpha = flat.reshape(mask.shape[0], mask.shape[1], 4)[:, :, 3]
    assert np.array_equal(rle_to_alpha(ref, *mask.shape), alpha)
    assert np.array_equal(rle_to_mask(ref, *mask.shape), alpha > 0)
    if mask.dtype == bool:
        assert np.array_equal(rle_to_mask(ours, *mask.shape), mask)


# --------------------------------------------------------------------------- byte identity
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (3, 5), (17, 13), (64, 64), (101, 37)])
@pytest.mark.parametrize("p", [0.0, 0.02, 0.5, 0.98, 1.0])
def test_random_masks_odd_sizes_empty_full(shape, p):
    rng = np.random.default_rng(hash((shape, p)) % 2**32)
    assert_same_as_official(rng.random(shape) < p)


def test_structured_masks():
    yy, xx = np.mgrid[:200, :300]
    masks = [
        (xx - 150) ** 2 + (yy - 90) ** 2 < 70**2,            # disc
        ((xx // 3) % 2 == 0)[:40, :90],                      # vertical stripes: 3 px runs
        ((xx + yy) % 2 == 0)[:40, :61],                      # checkerboard: 1 px runs
        (yy > 50) & (yy < 120) & (xx > 10) & (xx < 290),     # rectangle
        np.ones((200, 300), bool),                           # 240000 values: 4 chunks of 2**16
    ]
    for m in masks:
        assert_same_as_official(m)


@pytest.mark.parametrize("run_px", [1, 2, 3, 4, 5, 63, 64, 65, 16383, 16384, 16385, 32769])
def test_run_length_class_and_chunk_boundaries(run_px):
    # 4 values per pixel: runs of 4, 8 | 12, 16 | 20 .. 256 | 260 .. 65536 | 65540 (chunked)
    m = np.zeros((1, run_px + 2), bool)
    m[0, 1 : 1 + run_px] = True
    assert_same_as_official(m)
    assert_same_as_official(m.reshape(-1, 1) if run_px < 100 else ~m)


def test_photo_segment_masks():
    rng = np.random.default_rng(0)
    for name in ("astronaut", "coffee", "chelsea"):
        img = transform.resize(getattr(data, name)(), (197, 256), anti_aliasing=True)
        labels = segmentation.slic(img, n_segments=12, compactness=10, start_label=0)
        for seg in rng.choice(np.unique(labels), size=3, replace=False):
            assert_same_as_official(labels == seg)


def test_non_bool_inputs():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (23, 19), dtype=np.uint8)          # arbitrary alpha values
    assert_same_as_official(u8)
    ones = (rng.random((20, 20)) > 0.5).astype(np.uint8)          # 0/1 uint8 stays 0/1 like mask2rle
    assert mask_to_rle(ones) == official.mask2rle(ones)
    as_int = (rng.random((9, 11)) > 0.5).astype(np.int64) * 255  # official accepts int too
    assert mask_to_rle(as_int) == official.mask2rle(as_int)
    assert mask_to_rle(as_int.astype(np.int16)) == official.mask2rle(as_int)
    # bool True means 255 (opaque), identical to the 0/255 uint8 mask
    b = as_int > 0
    assert mask_to_rle(b) == mask_to_rle(as_int.astype(np.uint8))


# --------------------------------------------------------------------------- general streams
def _encode_tokens(num, ws, sizes, tokens) -> list[int]:
    """Independent bit-string writer of the rle-pack format (any word/field sizes, literal and
    repeat tokens): tokens are (flag, class, values) with len(values) == 1 for a repeat."""
    bits = f"{num:032b}{ws - 1:05b}" + "".join(f"{s - 1:04b}" for s in sizes)
    for flag, c, count, values in tokens:
        bits += f"{flag}{c:02b}{count - 1:0{sizes[c]}b}" + "".join(f"{v:0{ws}b}" for v in values)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


@pytest.mark.parametrize("seed", range(12))
def test_decode_literal_tokens_and_other_header_params(seed):
    # Streams as thi.ng's rle-pack (Label Studio's front-end) may write them: literal runs,
    # other word sizes and field sizes. The official decoder is the oracle.
    rng = np.random.default_rng(seed)
    ws = int(rng.integers(1, 17))                 # word sizes > 8 with byte-sized values
    sizes = [int(x) for x in rng.integers(1, 9, size=4)]
    tokens, num = [], 0
    for _ in range(int(rng.integers(1, 40))):
        c = int(rng.integers(0, 4))
        count = int(rng.integers(1, 2 ** sizes[c] + 1))
        flag = int(rng.integers(0, 2))
        values = rng.integers(0, min(2**ws, 256), size=1 if flag else count).tolist()
        tokens.append((flag, c, count, values))
        num += count
    rle = _encode_tokens(num, ws, sizes, tokens)
    assert np.array_equal(decode_flat(rle), official.decode_rle(rle))


def test_decode_accepts_bytes_and_arrays():
    m = np.random.default_rng(2).random((16, 16)) > 0.5
    rle = official_encode(m)
    for form in (bytes(rle), np.array(rle, dtype=np.uint8), np.array(rle, dtype=np.int64)):
        assert np.array_equal(rle_to_mask(form, 16, 16), m)


# --------------------------------------------------------------------------- errors
def test_malformed_rle_errors():
    m = np.random.default_rng(3).random((32, 32)) > 0.5
    rle = official_encode(m)
    with pytest.raises(BrushRLEError, match="height\\*width\\*4"):
        rle_to_mask(rle, 32, 31)
    with pytest.raises(BrushRLEError, match="ends after"):
        rle_to_mask(rle[: len(rle) // 2], 32, 32)
    with pytest.raises(BrushRLEError, match="header"):
        rle_to_mask(rle[:5], 32, 32)
    with pytest.raises(BrushRLEError, match="0..255"):
        rle_to_mask([*rle[:-1], 256], 32, 32)
    with pytest.raises(BrushRLEError, match="integers"):
        rle_to_mask([float(x) for x in rle], 32, 32)
    with pytest.raises(BrushRLEError, match="flat"):
        rle_to_mask([rle, rle], 32, 32)
    with pytest.raises(BrushRLEError, match="positive"):
        rle_to_mask(rle, 0, 32)
    # a literal token that writes past the declared length (the official decoder crashes too)
    bad = _encode_tokens(3, 8, [3, 4, 8, 16], [(0, 0, 4, [1, 2, 3, 4])])
    with pytest.raises(BrushRLEError, match="literal"):
        decode_flat(bad)
    with pytest.raises(IndexError):
        official.decode_rle(bad)
    # a value that does not fit a byte (word size 9): the official decoder overflows too
    wide = _encode_tokens(4, 9, [3, 4, 8, 16], [(1, 1, 4, [300])])
    with pytest.raises(BrushRLEError, match="fit a byte"):
        decode_flat(wide)
    with pytest.raises(OverflowError):
        official.decode_rle(wide)
    # trailing bytes after the last value are ignored by both
    assert np.array_equal(rle_to_mask([*rle, 255, 7], 32, 32), m)
    # a repeat run past the end is truncated, exactly as the official slice assignment does
    over = _encode_tokens(3, 8, [3, 4, 8, 16], [(1, 0, 5, [9])])
    assert np.array_equal(decode_flat(over), official.decode_rle(over))


def test_mask_errors():
    with pytest.raises(BrushRLEError, match="2-D"):
        mask_to_rle(np.zeros((2, 2, 2), bool))
    with pytest.raises(BrushRLEError, match="empty"):
        mask_to_rle(np.zeros((0, 5), bool))
    with pytest.raises(BrushRLEError, match="0..255"):
        mask_to_rle(np.full((2, 2), 256))
    with pytest.raises(BrushRLEError, match="0..255"):
        mask_to_rle(np.full((2, 2), -1))
    with pytest.raises(BrushRLEError, match="dtype"):
        mask_to_rle(np.ones((2, 2), np.float32))
