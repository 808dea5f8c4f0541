"""Ingestion throughput: N samples of 512x512 images (first ingest vs re-ingest of the same
manifest), peak memory. Baseline and contender run in the same process, one after the other.

    .venv/bin/python benchmarks/bench_ingest.py --samples 2000
"""
from __future__ import annotations

import argparse
import os
import datetime as dt
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fixtures.core import write_manifest  # noqa: E402
from warehouse.ingest import ingest_path  # noqa: E402
from warehouse.workspace import Workspace  # noqa: E402


def make_manifest(folder: Path, n: int, size: int = 512, group: int = 8) -> Path:
    """n samples; one source per `group` rollouts; every edit is a distinct recolored box."""
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    rng = np.random.default_rng(0)
    rows = []
    src_img = None
    for i in range(n):
        if i % group == 0:
            g = i // group
            base = photos[g % len(photos)]
            src_img = np.asarray(Image.fromarray(base).resize((size, size)))
            src_img = np.roll(src_img, g, axis=1)  # distinct source per group
            Image.fromarray(src_img).save(folder / f"src{g}.png", compress_level=1)
        x, y = rng.integers(0, size - 64, 2)
        ed = src_img.copy()
        ed[y:y + 64, x:x + 64, i % 3] = 255 - ed[y:y + 64, x:x + 64, i % 3]
        Image.fromarray(ed).save(folder / f"ed{i}.png", compress_level=1)
        rows.append({"source": f"src{i // group}.png", "edited": f"ed{i}.png",
                     "instruction": f"invert one channel of the patch ({i // group})"})
    return write_manifest(folder, rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ingest.md"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        t0 = time.perf_counter()
        (tmp / "in").mkdir()
        manifest = make_manifest(tmp / "in", args.samples)
        t_gen = time.perf_counter() - t0
        ws = Workspace.open(tmp / "home")
        t0 = time.perf_counter()
        first = ingest_path(ws, manifest)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = ingest_path(ws, manifest)
        t_again = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert first.ingested == args.samples and again.duplicates == args.samples, (first, again)
        lines = [
            "# Ingestion benchmark", "",
            f"Command: `.venv/bin/python benchmarks/bench_ingest.py --samples {args.samples}`  ",
            f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: 2-core CPU VM, 24 GiB, local disk; "
            f"load average at the end {os.getloadavg()[0]:.1f} (other jobs share the machine).", "",
            f"{args.samples} samples of 512x512 PNG (one source per 8 rollouts; {args.samples + args.samples // 8} image files); "
            f"generating the inputs took {t_gen:.1f} s (not counted).", "",
            "| run | seconds | samples/s |", "|---|---:|---:|",
            f"| first ingest (decode, validate, store, insert) | {t_first:.1f} | {args.samples / t_first:.0f} |",
            f"| re-ingest of the same manifest (hash, find, skip) | {t_again:.1f} | {args.samples / t_again:.0f} |", "",
            f"Re-ingest speed-up: **{t_first / t_again:.1f}x** (target >= 10x).  ",
            f"Peak RSS of the whole process: {peak_mb:.0f} MiB.",
        ]
        Path(args.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
