"""DuckLake decided with measurements: what pinning DuckDB 1.4 LTS (the only line with a packaged,
offline DuckLake extension) would cost and gain, against the project's DuckDB 2.0.1.

Same synthetic warehouse as benchmarks/bench_curation.py (GRPO groups of 4, 10 regions per sample,
3 annotators per sample: N samples -> 30 N region ratings). Each step runs in a fresh child
process of the interpreter it needs: the project's venv (DuckDB 2.0.1) or a throwaway venv with
DuckDB 1.4.4 + duckdb-ext-ducklake, made once with

    python3.11 -m venv /tmp/dl && /tmp/dl/bin/pip install duckdb==1.4.4 \\
        duckdb-ext-ducklake==1.4.4.20260205 pytz pandas pyarrow

Measured (wall seconds; queries: median of 3 in one process after one warm-up):
  generate   - the warehouse built by the same SQL on 2.0 and on 1.4 (the ingest-like write path)
  open       - whether 1.4 opens the 2.0 file (it cannot: the migration is part of the cost)
  migrate    - EXPORT DATABASE (parquet) on 2.0 + IMPORT DATABASE on 1.4; row counts compared
  queries    - the label aggregation of curation (warehouse.curation.aggregate) and two status
               queries, on 2.0's file, on 1.4's file, and on a DuckLake (1.4) holding the same tables
  snapshots  - a sync changing 1,000 annotations in the lake: time, new snapshot, bytes added,
               and time travel to the previous version (AT (VERSION => n)), against what a
               version costs today: a full parquet snapshot (warehouse.lake.export_snapshot)

    .venv/bin/python benchmarks/bench_ducklake.py [--samples 100000] [--dl-python /tmp/dl/bin/python] \\
        [--out benchmarks/results/ducklake.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLES_CHECKED = ("samples", "regions", "annotations", "annotation_regions")
CHANGED = 1000


# ------------------------------------------------------------------------------------ children
def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def _load_aggregate():
    """warehouse.curation.aggregate without the curation package's image dependencies (the 1.4
    venv has no Pillow): the module itself needs only duckdb and warehouse.db."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sfr_aggregate", ROOT / "warehouse" / "curation" / "aggregate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ducklake_path() -> str:
    import duckdb_ext

    found = list(Path(list(duckdb_ext.__path__)[0]).rglob("ducklake.duckdb_extension"))  # a namespace package
    return str(found[0])


def _queries(con) -> dict:
    agg = _load_aggregate()

    def aggregation():
        agg.prepare_current(con)
        return agg.aggregate_into_tables(con, persist=False)

    def per_batch():
        return con.execute("SELECT s.batch_id, count(*), avg(a.overall) FROM samples s JOIN annotations a "
                           "USING (sample_id) WHERE NOT a.is_deleted GROUP BY 1 ORDER BY 1").fetchall()

    def region_verdicts():
        return con.execute("SELECT kind, verdict, count(*), avg(success) FROM annotation_regions "
                           "GROUP BY ALL ORDER BY ALL").fetchall()

    out = {}
    for name, fn in (("aggregation", aggregation), ("per_batch", per_batch), ("region_verdicts", region_verdicts)):
        fn()  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t)
        out[name] = {"median_s": statistics.median(times),
                     "result": res if isinstance(res, dict) else len(res)}
    return out


def _counts(con) -> dict:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES_CHECKED}


def child_generate(home: str, n: int) -> dict:
    import duckdb

    from benchmarks.bench_curation import generate

    secs = generate(Path(home), n)
    return {"duckdb": duckdb.__version__, "generate_s": secs, "file_bytes": (Path(home) / "warehouse.duckdb").stat().st_size}


def child_open(path: str) -> dict:
    import duckdb

    try:
        duckdb.connect(path, read_only=True).close()
        return {"duckdb": duckdb.__version__, "opens": True, "error": None}
    except duckdb.Error as e:
        return {"duckdb": duckdb.__version__, "opens": False, "error": str(e).splitlines()[0][:300]}


def child_export(path: str, out: str) -> dict:
    import duckdb

    con = duckdb.connect(path, read_only=True)
    t = time.perf_counter()
    con.execute(f"EXPORT DATABASE '{out}' (FORMAT parquet)")
    secs = time.perf_counter() - t
    res = {"export_s": secs, "export_bytes": _dir_bytes(Path(out)), "counts": _counts(con)}
    con.close()
    return res


def child_import(src: str, path: str) -> dict:
    import duckdb

    con = duckdb.connect(path)
    t = time.perf_counter()
    con.execute(f"IMPORT DATABASE '{src}'")
    secs = time.perf_counter() - t
    con.execute("CHECKPOINT")
    res = {"import_s": secs, "counts": _counts(con)}
    con.close()
    res["file_bytes"] = Path(path).stat().st_size
    return res


def child_queries(path: str) -> dict:
    import duckdb

    con = duckdb.connect(path)  # read-write: the aggregation builds temp tables
    return {"duckdb": duckdb.__version__, **_queries(con)}


def child_export_snapshot(home: str, root: str) -> dict:
    from warehouse.db import Warehouse
    from warehouse.lake import export_snapshot
    from warehouse.workspace import Workspace

    wh = Warehouse.open(Workspace.open(home))
    t = time.perf_counter()
    export_snapshot(wh, root)
    return {"snapshot_s": time.perf_counter() - t, "snapshot_bytes": _dir_bytes(Path(root))}


def child_lake(src: str, lake_dir: str) -> dict:
    """Copy every table of the 1.4 file into a DuckLake, query it, change 1,000 annotations, time travel."""
    import duckdb

    lake_dir = Path(lake_dir)
    (lake_dir / "data").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"LOAD '{_ducklake_path()}'")
    con.execute(f"ATTACH '{src}' AS wh (READ_ONLY)")
    con.execute(f"ATTACH 'ducklake:{lake_dir}/meta.ducklake' AS lake (DATA_PATH '{lake_dir}/data/')")
    tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'wh' "
                                        "ORDER BY table_name").fetchall()]
    t = time.perf_counter()
    for tb in tables:
        con.execute(f"CREATE TABLE lake.{tb} AS SELECT * FROM wh.{tb}")
    load_s = time.perf_counter() - t
    data_bytes = _dir_bytes(lake_dir / "data")
    con.execute("DETACH wh")
    con.execute("USE lake")
    res = {"tables": len(tables), "load_s": load_s, "data_bytes": data_bytes, "counts": _counts(con)}
    res["queries"] = _queries(con)

    # A sync round: 1,000 annotations get a new version (rating changed) -> one snapshot.
    before = con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
    before_sum = con.execute("SELECT sum(overall) FROM annotations").fetchone()[0]
    t = time.perf_counter()
    con.execute("BEGIN")
    con.execute(f"UPDATE annotations SET overall = 6 - overall, version = version + 1 WHERE ls_annotation_id IN "
                f"(SELECT ls_annotation_id FROM annotations WHERE overall IS NOT NULL ORDER BY ls_annotation_id "
                f"LIMIT {CHANGED})")
    con.execute("COMMIT")
    res["sync_update_s"] = time.perf_counter() - t
    after = con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
    res["snapshot_before"], res["snapshot_after"] = before, after
    res["snapshot_delta_bytes"] = _dir_bytes(lake_dir / "data") - data_bytes
    res["metadata_bytes"] = _dir_bytes(lake_dir) - _dir_bytes(lake_dir / "data")

    # Time travel: the dataset as of the version before the sync.
    t = time.perf_counter()
    old = con.execute(f"SELECT sum(overall) FROM annotations AT (VERSION => {before})").fetchone()[0]
    res["time_travel_sum_s"] = time.perf_counter() - t
    now = con.execute("SELECT sum(overall) FROM annotations").fetchone()[0]
    res["time_travel_equal_before"] = old == before_sum
    res["current_differs"] = now != before_sum
    # A per-sample aggregate of the old version, through a view over the snapshot.
    con.execute(f"CREATE OR REPLACE TEMP VIEW annotations_v AS SELECT * FROM annotations AT (VERSION => {before})")
    t = time.perf_counter()
    con.execute("SELECT sample_id, avg(overall) FROM annotations_v GROUP BY 1").fetchall()
    res["time_travel_group_s"] = time.perf_counter() - t
    con.close()
    return res


CHILDREN = {"generate": child_generate, "open": child_open, "export": child_export, "import": child_import,
            "queries": child_queries, "export_snapshot": child_export_snapshot, "lake": child_lake}


# ---------------------------------------------------------------------------------- orchestration
def run_child(python: str, kind: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    out = subprocess.run([python, __file__, "--child", kind, *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child {kind} ({python}) failed:\n{out.stderr[-4000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["child_wall_s"] = time.perf_counter() - t
    print(f"[{kind} @ {Path(python).parent.parent.name}] {json.dumps(res, default=str)[:400]}", file=sys.stderr,
          flush=True)
    return res


def mib(b: int) -> str:
    return f"{b / 2**20:,.1f} MiB" if abs(b) >= 2**20 else f"{b / 2**10:,.0f} KiB"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--dl-python", default="/tmp/dl/bin/python", help="python of a venv with DuckDB 1.4 + ducklake")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ducklake.md"))
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        fn = CHILDREN[kind]
        res = fn(rest[0], int(rest[1])) if kind == "generate" else fn(*rest)
        print(json.dumps(res, default=str))
        return 0
    py20, py14 = sys.executable, args.dl_python
    if not Path(py14).exists():
        print(f"{py14} not found; create the DuckDB 1.4 venv first (see this file's docstring)", file=sys.stderr)
        return 2
    n = args.samples
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="sfr-ducklake-"))
    try:
        g20 = run_child(py20, "generate", tmp / "h20", n)
        g14 = run_child(py14, "generate", tmp / "h14", n)
        opened = run_child(py14, "open", tmp / "h20" / "warehouse.duckdb")
        exp = run_child(py20, "export", tmp / "h20" / "warehouse.duckdb", tmp / "export")
        imp = run_child(py14, "import", tmp / "export", tmp / "migrated.duckdb")
        q20 = run_child(py20, "queries", tmp / "h20" / "warehouse.duckdb")
        q14 = run_child(py14, "queries", tmp / "migrated.duckdb")
        snap = run_child(py20, "export_snapshot", tmp / "h20", tmp / "snapshots")
        lake = run_child(py14, "lake", tmp / "migrated.duckdb", tmp / "lake")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    assert imp["counts"] == exp["counts"] == lake["counts"], (imp["counts"], exp["counts"], lake["counts"])
    assert q20["aggregation"]["result"] == q14["aggregation"]["result"] == lake["queries"]["aggregation"]["result"]
    cmd = f".venv/bin/python benchmarks/bench_ducklake.py --samples {n} --dl-python {py14}"
    rows = exp["counts"]
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"  # noqa: E731
    qrows = []
    for name in ("aggregation", "per_batch", "region_verdicts"):
        a, b, c = q20[name]["median_s"], q14[name]["median_s"], lake["queries"][name]["median_s"]
        qrows.append(f"| {name} | {a:.3f} | {b:.3f} ({ratio(b, a)}) | {c:.3f} ({ratio(c, a)}) |")
    lines = [
        "# DuckLake on DuckDB 1.4 LTS vs the project's DuckDB 2.0", "",
        f"Command: `{cmd}`  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), shared with other jobs; "
        f"DuckDB {g20['duckdb']} (project venv) and {g14['duckdb']} + duckdb-ext-ducklake (throwaway venv); "
        f"1-min load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (absolute "
        "times are inflated by other jobs; compare the ratios, measured in the same run)", "",
        f"Synthetic warehouse ({n:,} samples; the bench_curation generator): "
        + ", ".join(f"{k} {v:,}" for k, v in rows.items()) + ".", "",
        "## Cost: the pin and the migration", "",
        "| step | value |", "|---|---|",
        f"| build the warehouse (same SQL), 2.0 | {g20['generate_s']:.1f} s, file {mib(g20['file_bytes'])} |",
        f"| build the warehouse (same SQL), 1.4 | {g14['generate_s']:.1f} s ({ratio(g14['generate_s'], g20['generate_s'])}), "
        f"file {mib(g14['file_bytes'])} |",
        f"| 1.4 opens the 2.0 file | {'yes' if opened['opens'] else 'no: ' + str(opened['error'])} |",
        f"| migrate: EXPORT DATABASE on 2.0 (parquet) | {exp['export_s']:.1f} s, {mib(exp['export_bytes'])} |",
        f"| migrate: IMPORT DATABASE on 1.4 | {imp['import_s']:.1f} s, file {mib(imp['file_bytes'])}; row counts equal: "
        f"{imp['counts'] == exp['counts']} |",
        f"| migrate, total (both processes, wall) | {exp['child_wall_s'] + imp['child_wall_s']:.1f} s |", "",
        "## Typical queries (median of 3, seconds; ratio to 2.0)", "",
        "| query | 2.0 file | 1.4 file | DuckLake on 1.4 |", "|---|---|---|---|", *qrows, "",
        "`aggregation` is curation's label aggregation (`prepare_current` + `aggregate_into_tables`, "
        "the SQL the dataset build runs); results are equal on all three.", "",
        "## Dataset versions: DuckLake snapshots vs parquet snapshots", "",
        "| what | value |", "|---|---|",
        f"| load every table into the lake | {lake['load_s']:.1f} s, {mib(lake['data_bytes'])} parquet |",
        f"| today: one version = a full parquet snapshot (`export_snapshot`, 2.0) | {snap['snapshot_s']:.1f} s, "
        f"{mib(snap['snapshot_bytes'])} |",
        f"| DuckLake: a sync changing {CHANGED:,} annotations (one transaction = one snapshot) | "
        f"{lake['sync_update_s']:.2f} s, +{mib(lake['snapshot_delta_bytes'])} "
        f"(snapshot {lake['snapshot_before']} -> {lake['snapshot_after']}) |",
        f"| time travel: `sum(overall)` at the previous version | {lake['time_travel_sum_s']:.3f} s; equals the "
        f"value before the sync: {lake['time_travel_equal_before']}; current differs: {lake['current_differs']} |",
        f"| time travel: per-sample mean at the previous version | {lake['time_travel_group_s']:.3f} s |",
        f"| catalog (metadata) size | {mib(lake['metadata_bytes'])} |", "",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
