"""Memory of `sfr ingest --schema magicbrush` at two dataset sizes: streaming keeps the peak RSS
independent of the number of rows. Each measurement runs in a fresh process (peak RSS is per
process); the baseline in the same run is a naive reader that loads the whole dataset into
Python first (what `load_from_disk(...)[:]` or `read_table().to_pylist()` would do).

    .venv/bin/python benchmarks/bench_byod_memory.py --rows 300 --factor 4

Inputs: MagicBrush-schema datasets (source_img, target_img, mask_img as HF Image structs,
instruction) of real scikit-image photos at 256x256, written as parquet shards and with
`Dataset.save_to_disk`; every edited image distinct.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZE = 256


def _rows(n: int):
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    photos = [np.asarray(Image.fromarray(f()).resize((SIZE, SIZE))) for f in
              (skdata.astronaut, skdata.chelsea, skdata.coffee, skdata.rocket)]

    def png(a) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    srcs = [png(p) for p in photos]
    rng = np.random.default_rng(0)
    for i in range(n):
        src = photos[i % 4]
        x, y = (int(v) for v in rng.integers(0, SIZE - 64, 2))
        ed = src.copy()
        ed[y:y + 64, x:x + 64, i % 3] = 255 - ed[y:y + 64, x:x + 64, i % 3]
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[y:y + 64, x:x + 64] = 255
        yield {"source_img": {"bytes": srcs[i % 4], "path": None}, "target_img": {"bytes": png(ed), "path": None},
               "mask_img": {"bytes": png(mask), "path": None}, "instruction": f"invert the patch ({i})"}


def make(folder: Path, n: int) -> dict[str, Path]:
    """The same n rows as 4 parquet shards and as a save_to_disk folder."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    feats = datasets.Features({"source_img": datasets.Image(), "target_img": datasets.Image(),
                               "mask_img": datasets.Image(), "instruction": datasets.Value("string")})
    shards = folder / "parquet" / "data"
    shards.mkdir(parents=True)
    schema = feats.arrow_schema
    writers = [pq.ParquetWriter(shards / f"train-{k:05d}-of-00004.parquet", schema) for k in range(4)]
    buf: list[dict] = []
    for i, row in enumerate(_rows(n)):
        buf.append(row)
        if len(buf) == 25 or i == n - 1:
            writers[(i // 25) % 4].write_table(pa.Table.from_pylist(buf, schema=schema), row_group_size=25)
            buf = []
    for w in writers:
        w.close()
    ds = datasets.Dataset.from_generator(lambda: _rows(n), features=feats, cache_dir=str(folder / "cache"))
    ds.save_to_disk(folder / "disk")
    return {"parquet": folder / "parquet", "save_to_disk": folder / "disk"}


def _status_mib(key: str) -> float:
    """VmRSS (now) or VmHWM (peak of this process image; ru_maxrss would carry the parent's peak
    across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def child(mode: str, path: str, home: str) -> None:
    """One measurement: prints JSON {base, peak} in MiB (after imports / at the end)."""
    from warehouse.ingest import IngestConfig, ingest_path
    from warehouse.sources import SourceOptions, data_files, is_hf_disk
    from warehouse.workspace import Workspace

    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    base = _status_mib("VmRSS")
    t0 = time.perf_counter()
    if mode == "stream":
        s = ingest_path(Workspace.open(home), p, IngestConfig(source_options=SourceOptions("magicbrush")))
        n = s.ingested
    else:  # naive: every row in Python first
        files = data_files(p)
        if is_hf_disk(p):
            rows = [r for f in files for r in pa.ipc.open_stream(pa.OSFile(str(f))).read_all().to_pylist()]
        else:
            rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        n = len(rows)
    peak = _status_mib("VmHWM")
    print(json.dumps({"base": base, "peak": peak, "rows": n, "seconds": time.perf_counter() - t0}))


def measure(mode: str, path: Path, home: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(home)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "HOME"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "byod_memory.md"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-byod-"))
    sizes = [args.rows, args.rows * args.factor]
    results = []
    for n in sizes:
        paths = make(tmp / f"n{n}", n)
        mb = sum(f.stat().st_size for f in paths["parquet"].rglob("*.parquet")) / 2**20
        for fmt, path in paths.items():
            for mode in ("naive", "stream"):
                r = measure(mode, path, tmp / f"home-{n}-{fmt}-{mode}")
                assert r["rows"] == n, r
                results.append({"n": n, "fmt": fmt, "mode": mode, "mb": mb, **r})
    cmd = f".venv/bin/python benchmarks/bench_byod_memory.py --rows {args.rows} --factor {args.factor}"
    lines = ["# Bring your own data: ingest memory at two dataset sizes", "",
             f"- command: `{cmd}`",
             f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; 2-core CPU VM shared with other jobs, "
             f"load average at the end {os.getloadavg()[0]:.1f}",
             f"- data: MagicBrush schema (source_img, target_img, mask_img, instruction), real photos at {SIZE}x{SIZE} "
             "PNG, every edited image distinct; 4 parquet shards (row groups of 25) and a save_to_disk folder",
             "- each cell is one fresh process; peak = VmHWM; 'own' = peak minus the RSS after imports",
             "- stream = `ingest_path(..., SourceOptions('magicbrush'))` (decode, validate, store, masks, warehouse); "
             "naive = read every row into Python (`to_pylist`) and nothing else", "",
             "| format | reader | rows | parquet MiB | peak RSS MiB | own MiB | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['fmt']} | {r['mode']} | {r['n']} | {r['mb']:.0f} | {r['peak']:.0f} | "
                     f"{r['peak'] - r['base']:.0f} | {r['seconds']:.1f} |")
    lines += ["", f"Growth of 'own' memory from {sizes[0]} to {sizes[1]} rows ({args.factor}x the data):", "",
              "| format | naive | stream |", "|---|---:|---:|"]
    for fmt in ("parquet", "save_to_disk"):
        def own(mode, n):
            r = next(x for x in results if (x["fmt"], x["mode"], x["n"]) == (fmt, mode, n))
            return max(r["peak"] - r["base"], 1.0)
        lines.append(f"| {fmt} | {own('naive', sizes[1]) / own('naive', sizes[0]):.2f}x | "
                     f"{own('stream', sizes[1]) / own('stream', sizes[0]):.2f}x |")
    lines += ["", "Target: streaming ingest memory independent of the dataset size (growth ~1.0x, at most 1.25x)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
