"""Does the demo model work as a reward on every seed, not one lucky one? (issue 13, point 7)

Runs `sfr demo` (the whole pipeline: synthetic edits -> Label Studio -> simulated annotators ->
curation with leakage-free perceptual splits -> training -> evaluation -> held-out scoring) once per
seed, each in a fresh workspace, and tabulates the held-out reward check of each run (region SRCC
vs aggregated labels and vs ground truth, localization AUROC with its n) with the pipeline's wall
time after set-up (Label Studio start excluded) and the machine load.

Required per seed: region SRCC >= 0.6 (labels and truth), localization AUROC >= 0.9 over >= 30
samples; pipeline after set-up <= 600 s on the 2-core machine.

    .venv/bin/python benchmarks/bench_demo_seeds.py [--seeds 0 1 2] [--out benchmarks/results/demo_seeds.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETUP_STAGES = ("Label Studio on 127.0.0.1", "Dagster instance")


def start_seed(seed: int, home: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "--home", str(home), "demo", "--seed", str(seed)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return {"seed": seed, "home": home, "proc": proc, "t0": time.perf_counter(), "load0": os.getloadavg()[0]}


def finish_seed(job: dict) -> dict:
    seed, home, proc = job["seed"], job["home"], job["proc"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    _, stderr = proc.communicate()
    wall = time.perf_counter() - job["t0"]
    load0 = job["load0"]
    subprocess.run([sys.executable, "-m", "pipelines.cli", "--home", str(home), "labelstudio", "down"],
                   env=env, capture_output=True)
    if proc.returncode != 0:
        return {"seed": seed, "error": stderr[-2000:]}
    times = {}
    for line in stderr.splitlines():   # "[k/n] <stage>: done in N s"
        if line.startswith("[") and ": done in " in line:
            stage, sec = line.split("] ", 1)[1].rsplit(": done in ", 1)
            times[stage] = float(sec.split()[0])
    check = json.loads((home / "reports" / "heldout" / "reward_check.json").read_text())
    return {"seed": seed, "check": check, "wall_s": wall, "stage_s": times, "load_start": load0,
            "load_end": os.getloadavg()[0],
            "pipeline_s": sum(v for k, v in times.items() if k not in SETUP_STAGES)}


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['seed']} | failed: {r['error'][-200:]!r} |"
    lab, tru = r["check"]["vs_labels"], r["check"]["vs_truth"]
    ok = (min(lab["region_srcc_mean"] or 0, tru["region_srcc_mean"] or 0) >= 0.6
          and min(lab["localization_auroc"] or 0, tru["localization_auroc"] or 0) >= 0.9
          and min(lab["n_localization"], tru["n_localization"]) >= 30)
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"| {r['seed']} | {r['check']['n_samples']} | {f(lab['region_srcc_mean'])} | {f(tru['region_srcc_mean'])} | "
            f"{f(lab['localization_auroc'])} (n={lab['n_localization']}) | "
            f"{f(tru['localization_auroc'])} (n={tru['n_localization']}) | {'yes' if ok else 'NO'} | "
            f"{r['pipeline_s']:.0f} | {r['load_start']:.1f} -> {r['load_end']:.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_seeds.md"))
    ap.add_argument("--keep", action="store_true", help="keep the workspaces (printed)")
    ap.add_argument("--parallel", action="store_true",
                    help="run the seeds at the same time (each then gets a share of the CPUs: stage times grow)")
    ap.add_argument("--stagger", type=float, default=150.0,
                    help="with --parallel, seconds between starts: Label Studio servers started at the same "
                         "moment race for the same port")
    args = ap.parse_args()
    results = []
    homes = {s: Path(tempfile.mkdtemp(prefix=f"sfr-demo-seed{s}-")) for s in args.seeds}
    if args.parallel:
        jobs = []
        for i, s in enumerate(args.seeds):
            if i:
                time.sleep(args.stagger)
            jobs.append(start_seed(s, homes[s]))
        results = [finish_seed(j) for j in jobs]
    else:
        results = [finish_seed(start_seed(s, homes[s])) for s in args.seeds]
    for r in results:
        print(row(r), flush=True)
        if args.keep:
            print(f"workspace: {homes[r['seed']]}")
        else:
            shutil.rmtree(homes[r["seed"]], ignore_errors=True)
    lines = ["# Demo model as a reward, per seed", "",
             f"Command: `.venv/bin/python benchmarks/bench_demo_seeds.py --seeds {' '.join(map(str, args.seeds))}"
             f"{' --parallel' if args.parallel else ''}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.node()}, "
             f"{os.cpu_count()} CPUs (shared with other jobs: load average noted per run)", "",
             "Test split of each run (sources never seen in training). Required: region SRCC >= 0.6 vs labels and "
             "vs truth; localization AUROC >= 0.9 over >= 30 samples; pipeline after set-up (Label Studio start "
             "and Dagster instance excluded) <= 600 s.", "",
             "| seed | test samples | region SRCC vs labels | region SRCC vs truth | loc. AUROC vs labels | "
             "loc. AUROC vs truth | meets point 7 | pipeline s | load (1 min avg) |",
             "|---|---|---|---|---|---|---|---|---|"] + [row(r) for r in results] + ["", "## Stage times (s)", ""]
    for r in results:
        if "stage_s" in r:
            lines.append(f"- seed {r['seed']}: " + ", ".join(f"{k}: {v:.0f}" for k, v in r["stage_s"].items()))
    lines += ["", "## Full reward checks", "", "```json",
              json.dumps([{"seed": r["seed"], **r.get("check", {})} for r in results], indent=1, default=str), "```"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
