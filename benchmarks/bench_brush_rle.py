"""Benchmark annotation.brush against Label Studio's official brush RLE codec and the community
Rust package label-studio-brush-rle-rs (skipped when not installed).

Masks: 1024x1024 segments of real photos (skimage astronaut, coffee, chelsea, rocket resized
to 1024x1024; the largest SLIC and Felzenszwalb segments of each). Every codec runs on every
mask, interleaved, in the same run; outputs are checked identical to the official ones first.

- encode: bool/uint8 mask [1024, 1024] -> list of RLE bytes. The official `mask2rle` and the
  Rust `encode_rle` both take the 0/255 uint8 mask; the Rust one wants the flat RGBA array, so
  its time includes the `np.repeat(mask.ravel(), 4)` that `mask2rle` does internally too.
- decode: RLE -> bool mask [1024, 1024] (official / Rust: `decode_rle`, reshape, channel 3 > 0).

Run: .venv/bin/python benchmarks/bench_brush_rle.py [--repeats 3] [--rust-encode-repeats 1]
Writes benchmarks/results/brush_rle.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from label_studio_sdk.converter import brush as official
from skimage import data, segmentation, transform

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from annotation.brush import mask_to_rle, rle_to_mask  # noqa: E402

try:
    import label_studio_brush_rle_rs as rust
    from importlib.metadata import version as _version

    RUST = f"label-studio-brush-rle-rs {_version('label-studio-brush-rle-rs')}"
except ImportError:  # the peer is optional: not a project dependency
    rust, RUST = None, None

SIZE = 1024
IMAGES = ("astronaut", "coffee", "chelsea", "rocket")


def photo_masks(images=IMAGES, per_method: int = 3) -> list[tuple[str, np.ndarray]]:
    out = []
    for name in images:
        img = transform.resize(getattr(data, name)(), (SIZE, SIZE), anti_aliasing=False)
        segs = {
            "slic": segmentation.slic(img, n_segments=16, compactness=10, start_label=0, max_num_iter=4),
            "felz": segmentation.felzenszwalb(img, scale=400, sigma=0.8, min_size=2000),
        }
        for method, labels in segs.items():
            ids, counts = np.unique(labels, return_counts=True)
            for seg in ids[np.argsort(-counts)][:per_method]:
                out.append((f"{name}/{method}/{seg}", labels == seg))
    return out


def timed(fn, repeats: int):
    ts, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rust-encode-repeats", type=int, default=1, help="the Rust encoder is slow (~1 s/mask)")
    ap.add_argument("--masks", type=int, default=None, help="use only the first N masks (quick check)")
    ap.add_argument("--images", default=",".join(IMAGES), help="comma-separated skimage.data images")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "brush_rle.md"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    images = tuple(x for x in args.images.split(",") if x)
    masks = photo_masks(images)[: args.masks]
    print(f"{len(masks)} masks in {time.perf_counter() - t0:.1f} s")
    codecs = ["official", "ours"] + (["rust"] if rust else [])
    # Warm every code path once (first-call costs are not per-mask costs).
    warm = masks[0][1][:256, :256]
    warm_rle = mask_to_rle(warm)
    official.decode_rle(official.mask2rle(warm.astype(np.uint8) * 255))
    rle_to_mask(warm_rle, *warm.shape)
    if rust:
        rust.decode_rle(rust.encode_rle(np.repeat(warm.astype(np.uint8).ravel() * 255, 4), 8, [3, 4, 8, 16]), False)
    enc = {c: 0.0 for c in codecs}
    dec = {c: 0.0 for c in codecs}
    nbytes, fg = [], []
    for name, m in masks:
        u8 = m.astype(np.uint8) * 255
        t_off, rle = timed(lambda: official.mask2rle(u8), args.repeats)
        t_ours, rle_ours = timed(lambda: mask_to_rle(m), args.repeats)
        assert rle_ours == rle, f"{name}: encode differs from the official codec"
        enc["official"] += t_off
        enc["ours"] += t_ours
        if rust:
            t_rs, rle_rs = timed(lambda: rust.encode_rle(np.repeat(u8.ravel(), 4), 8, [3, 4, 8, 16]),
                                 args.rust_encode_repeats)
            assert list(rle_rs) == rle, f"{name}: Rust encode differs"
            enc["rust"] += t_rs

        def dec_official():
            return official.decode_rle(rle).reshape(SIZE, SIZE, 4)[:, :, 3] > 0

        t_off, m_off = timed(dec_official, args.repeats)
        t_ours, m_ours = timed(lambda: rle_to_mask(rle, SIZE, SIZE), args.repeats)
        assert np.array_equal(m_off, m) and np.array_equal(m_ours, m), f"{name}: decode differs"
        dec["official"] += t_off
        dec["ours"] += t_ours
        if rust:
            t_rs, m_rs = timed(lambda: np.asarray(rust.decode_rle(rle, False)).reshape(SIZE, SIZE, 4)[:, :, 3] > 0,
                               args.repeats)
            assert np.array_equal(m_rs, m), f"{name}: Rust decode differs"
            dec["rust"] += t_rs
        nbytes.append(len(rle))
        fg.append(m.mean())
        print(f"{name:24s} {len(rle):7d} B  fg {m.mean():.3f}")

    n = len(masks)
    rows = []
    for c in codecs:
        rows.append((c, enc[c] / n * 1e3, enc["official"] / enc[c], dec[c] / n * 1e3, dec["official"] / dec[c]))
        print(f"{c:9s} encode {rows[-1][1]:8.2f} ms/mask ({rows[-1][2]:6.1f}x official)   "
              f"decode {rows[-1][3]:8.2f} ms/mask ({rows[-1][4]:6.1f}x official)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cmd = " ".join(["cd /work/main && .venv/bin/python benchmarks/bench_brush_rle.py", *sys.argv[1:]])
    lines = [
        "# Brush RLE: annotation.brush vs the official codec vs the Rust peer",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: 2-core CPU VM shared with other jobs ({platform.machine()}), numpy {np.__version__}, "
        f"load average at the end {load}",
        f"- command: `{cmd}`",
        f"- masks: {n} segments at {SIZE}x{SIZE} of skimage {', '.join(images)} (3 largest SLIC + 3 largest "
        f"Felzenszwalb segments each); foreground {min(fg):.1%}..{max(fg):.1%}; RLE {min(nbytes)}..{max(nbytes)} bytes "
        f"(median {int(np.median(nbytes))})",
        f"- official: label_studio_sdk.converter.brush (label-studio-sdk 2.1.2) `mask2rle` / `decode_rle`",
        f"- Rust peer: {RUST or 'NOT INSTALLED (pip install label-studio-brush-rle-rs==0.1.1 to include it)'}",
        f"- times: median of {args.repeats} runs per mask (Rust encode: {args.rust_encode_repeats}), averaged over "
        "masks, after one warm-up call of every codec; all outputs asserted identical to the official codec's; decode times include taking "
        "channel 3 as a bool mask",
        "",
        "| codec | encode (ms/mask) | encode vs official | decode (ms/mask) | decode vs official |",
        "|---|---:|---:|---:|---:|",
    ]
    for c, e, er, d, dr in rows:
        lines.append(f"| {c} | {e:.2f} | {er:.1f}x | {d:.2f} | {dr:.1f}x |")
    if rust:
        lines += ["", f"ours vs Rust: encode {enc['rust'] / enc['ours']:.1f}x faster, decode "
                      f"{dec['rust'] / dec['ours']:.2f}x the Rust speed (>1 = ours faster)."]
    lines += ["", f"Targets: decode >= 10x official -> {'met' if dec['official'] / dec['ours'] >= 10 else 'NOT met'}; "
                  f"encode >= 3x official -> {'met' if enc['official'] / enc['ours'] >= 3 else 'NOT met'}.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
