"""benchmarks/results/scale.md from bench_scale.py's state files (one full-size workspace and
the small-size repeats), with the 1M-sample extrapolation.

Run: .venv/bin/python benchmarks/scale_report.py --full /tmp/sfr-scale/14000 \
        --small /tmp/sfr-scale/1400-a /tmp/sfr-scale/1400-b /tmp/sfr-scale/1400-c
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["generate", "ingest", "proposals", "labelstudio", "push", "annotate", "sync", "sync_1000", "curation",
          "dataset", "export"]
# labelstudio is a start-up, sync_1000 a fixed 1,000 changes (its target is its time): not per sample
PER_SAMPLE = [s for s in STAGES if s not in ("labelstudio", "sync_1000")]
TARGET_FLAT = 0.20
TARGET_SYNC_S = 10.0
TARGET_CURATION_S = 60.0
M = 1_000_000

# Which engine carries each stage past one machine (docs/deployment.md).
ENGINE = {
    "generate": "synthetic only; real batches arrive from editors. Dagster k8s executor, one pod per batch partition",
    "ingest": "Dagster k8s executor per batch partition; images to object storage; warehouse writes are one "
              "writer (DuckDB), so past one writer: parquet on object storage (DuckLake when the catalog is needed)",
    "proposals": "Dagster k8s executor on GPU nodes (`gpu` pool = number of GPUs); SAM instead of the classical "
                 "proposer",
    "push": "Label Studio web tier: several Label Studio pods on one PostgreSQL (`labelstudio` pool caps callers)",
    "annotate": "people in production; the server side is the Label Studio web tier and its PostgreSQL",
    "sync": "one incremental caller (cost ~ changed tasks); Label Studio web tier answers the export reads",
    "sync_1000": "as sync",
    "curation": "DuckDB on one machine (columnar, multi-core); past its RAM: parquet on object storage read by "
                "DuckDB (or DuckLake)",
    "dataset": "as curation",
    "export": "parquet shards written by split; on object storage for torchrun training readers",
}


def load(home: Path) -> dict:
    return json.loads((home / "bench_state.json").read_text())


def _n(state: dict, rec: dict) -> float:
    """Samples the stage worked on: all of them, or (annotate, sync, curation...) what it got to."""
    return float(rec["result"].get("n") or state["config"]["samples"])


def _ms(state: dict, stage: str) -> float | None:
    rec = state["stages"].get(stage)
    return 1000 * rec["cpu_s"] / _n(state, rec) if rec else None


def _work_ms(state: dict, stage: str) -> float | None:
    """Per-sample CPU without the child's start-up and imports (fixed per stage process). Runs
    recorded before the start-up reading existed count it in (startup 0)."""
    rec = state["stages"].get(stage)
    return 1000 * (rec["cpu_s"] - rec.get("startup_cpu_s", 0.0)) / _n(state, rec) if rec else None


def _fmt(x: float | None, nd: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{nd}f}"


def stage_table(state: dict) -> list[str]:
    n = state["config"]["samples"]
    out = [f"| stage | samples | wall s | samples/s | CPU ms/sample (bench + Label Studio + PostgreSQL) | start-up CPU s | peak RSS MB "
           "(stage; Label Studio; PostgreSQL) | warehouse MB | images MB | Label Studio DB MB | finished |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in STAGES:
        r = state["stages"].get(s)
        if r is None:
            out.append(f"| {s} | not run | | | | | | | | | |")
            continue
        sc = r["server_cpu_s"]
        k = _n(state, r)
        split = (f"{_ms(state, s):.1f} ({1000 * r['bench_cpu_s'] / k:.1f} + "
                 f"{1000 * sc['labelstudio'] / k:.1f} + {1000 * sc['postgres'] / k:.1f})")
        sp = r["server_peak_rss_mb"]
        z = r["sizes"]
        wall = f"{r['wall_s']:.1f}" + (f" (sync alone {r['target_s']:.1f})" if "target_s" in r else "")
        out.append(f"| {s} | {k:,.0f} | {wall} | {k / r['wall_s']:.1f} | {split} | {r.get('startup_cpu_s', 0.0):.1f} | {r['peak_rss_mb']:.0f}; "
                   f"{sp['labelstudio']:.0f}; {sp['postgres']:.0f} | {z['warehouse_mb']:.0f} | {z['images_mb']:.0f} | "
                   f"{z['ls_db_mb']:.0f} | {r['finished']} |")
    return out


def flat_table(full: dict, small: list[dict]) -> tuple[list[str], list[str]]:
    n_full, n_small = full["config"]["samples"], small[0]["config"]["samples"] if small else 0
    out = [f"| stage | CPU ms/sample without start-up at {n_small:,} (runs) | median | at {n_full:,} | ratio | "
           "within +-20% |",
           "|---|---|---|---|---|---|"]
    missed = []
    for s in PER_SAMPLE:
        vals = [v for v in (_work_ms(st, s) for st in small) if v is not None]
        med = statistics.median(vals) if vals else None
        big = _work_ms(full, s)
        ratio = big / med if (big is not None and med) else None
        ok = "n/a" if ratio is None else ("yes" if abs(ratio - 1) <= TARGET_FLAT else "**no**")
        if ok == "**no**":
            missed.append(s)
        out.append(f"| {s} | {', '.join(f'{v:.1f}' for v in vals) or 'n/a'} | {_fmt(med)} | {_fmt(big)} | "
                   f"{_fmt(ratio, 2)} | {ok} |")
    return out, missed


def extrapolation(full: dict) -> list[str]:
    n = full["config"]["samples"]
    rows: list[tuple[float, str, dict]] = []
    for s in PER_SAMPLE:
        r = full["stages"].get(s)
        if r is None:
            continue
        core_h = _ms(full, s) * M / 1000 / 3600
        rows.append((core_h, s, r))
    rows.sort(reverse=True)
    out = ["| stage | CPU core-hours at 1M | hours at this run's rate (one machine, loaded) | "
           "what carries it past one machine |", "|---|---|---|---|"]
    for core_h, s, r in rows:
        rate = _n(full, r) / (r["target_s"] if "target_s" in r else r["wall_s"])
        out.append(f"| {s} | {core_h:,.0f} | {M / rate / 3600:,.0f} | {ENGINE[s]} |")
    st = full["stages"]
    last = st[max(st, key=lambda k: STAGES.index(k))]["sizes"]
    scale = M / n
    out += ["", f"Storage at 1M, linear from {n:,} samples: warehouse ~{last['warehouse_mb'] * scale / 1024:,.1f} GB "
            f"(with the annotations of the {_n(full, st['annotate']) if 'annotate' in st else 0:,.0f} annotated "
            f"samples only), image store {last['images_mb'] * scale / 1024:,.1f} GB."]
    if "push" in st and "annotate" in st:
        per_task = st["push"]["sizes"]["ls_db_mb"] / n
        per_ann = (st["annotate"]["sizes"]["ls_db_mb"] - st["push"]["sizes"]["ls_db_mb"]) / _n(full, st["annotate"])
        out[-1] += (f" Label Studio database: {1000 * per_task:.1f} MB per 1,000 tasks (with their predictions) + "
                    f"{1000 * per_ann:.1f} MB per 1,000 samples annotated 3 times: "
                    f"{(per_task + per_ann) * M / 1024:,.0f} GB at 1M.")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", required=True, type=Path)
    ap.add_argument("--small", nargs="*", type=Path, default=[])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale.md")
    ap.add_argument("--notes", type=Path, help="Markdown appended (findings, reasons for missed targets)")
    ap.add_argument("--machine", default="2 CPU cores shared with other engineers' jobs",
                    help="how loaded the machine was (written beside the results)")
    args = ap.parse_args()
    full = load(args.full)
    small = [load(p) for p in args.small if (p / "bench_state.json").exists()]
    cfg = full["config"]
    lines = ["# SFReward at full size on the PostgreSQL set-up (issue 16)", "",
             "Commands (each resumable: rerun the same command to continue):", "",
             "```",
             f".venv/bin/python benchmarks/bench_scale.py --samples {cfg['samples']} --workspace {args.full}"]
    lines += [f".venv/bin/python benchmarks/bench_scale.py --samples {s['config']['samples']} --workspace {p}"
              for s, p in zip(small, args.small)]
    lines += [f".venv/bin/python benchmarks/scale_report.py --full {args.full} --small "
              + " ".join(str(p) for p in args.small), "```", "",
              f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. Machine: {platform.machine()}, {args.machine}, Python "
              f"{platform.python_version()}. Images {cfg['image_size']} px, groups of {cfg['rollouts']}, "
              f"overlap {cfg['overlap']}. Label Studio 1.23 (`label-studio start`, one process) on the "
              "workspace's PostgreSQL 15 (`sfr labelstudio up --db postgres`); warehouse DuckDB.", "",
              f"## Per stage at {cfg['samples']:,} samples", ""]
    lines += stage_table(full)
    flat, missed = flat_table(full, small)
    lines += ["", f"## Per-sample CPU time, {small[0]['config']['samples'] if small else '?'} vs "
              f"{cfg['samples']:,} samples (target: flat within +-20%)", ""] + flat
    s1000 = full["stages"].get("sync_1000", {}).get("target_s")
    cur = sum(full["stages"][s]["wall_s"] for s in ("curation", "dataset") if s in full["stages"])
    have_cur = all(s in full["stages"] for s in ("curation", "dataset"))
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|",
              f"| per-sample CPU flat within +-20% | outside: {', '.join(missed) or 'none'} | "
              f"{'yes' if not missed else 'no'} |",
              f"| sync of {full['stages'].get('sync_1000', {}).get('result', {}).get('changed', 1000)} changed "
              f"annotations <= {TARGET_SYNC_S:.0f} s | {_fmt(s1000, 1)} s | "
              f"{'n/a' if s1000 is None else ('yes' if s1000 <= TARGET_SYNC_S else 'no')} |",
              f"| curation + dataset build <= {TARGET_CURATION_S:.0f} s | {_fmt(cur if have_cur else None, 1)} s | "
              f"{'n/a' if not have_cur else ('yes' if cur <= TARGET_CURATION_S else 'no')} |"]
    lines += ["", "## Extrapolation to 1M samples (CPU time per sample x 1M; stages sorted by cost)", ""]
    lines += extrapolation(full)
    if args.notes and args.notes.exists():
        lines += ["", args.notes.read_text().rstrip()]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
