"""The demo's model stage alone, on workspaces a full `sfr demo --seed N` already built (issue 13,
point 7): iterate on the model without rerunning synthesis, Label Studio and annotation.

For each workspace: train on its latest dataset version with the demo's settings (the `demo`
preset and pipelines.demo.DEMO_TRAIN, plus `--set` overrides), register the model as
`candidate`, and run the demo's own held-out stage (pipelines.demo.score_heldout: the reward
check against aggregated labels and ground truth, reward_check.json and the held-out picture
under <home>/reports/heldout/). Same trainer, same data, same metrics as `sfr demo`; only the
stages before the dataset are skipped. CPU time of the training is reported beside the wall time
because the machine is shared.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_demo_model.py --homes /tmp/d0 /tmp/d1 [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(home: Path, overrides: list[str]) -> dict:
    from pipelines.demo import DEMO_PRESET, DEMO_TRAIN, score_heldout
    from sfreward import registry
    from warehouse.datasets import current_dataset_id, open_version
    from sfreward.train.config import load_config
    from sfreward.train.trainer import train
    from warehouse.workspace import Workspace

    ws = Workspace.open(home)
    dataset_id = current_dataset_id(ws, export="hf")
    out = ws.models / "_bench" / f"{dataset_id}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = load_config(None, DEMO_TRAIN + [f"data_dir={open_version(ws, dataset_id)}", f"out_dir={out}",
                                          "ckpt_every=0", "log_every=1000"] + overrides, preset=DEMO_PRESET)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_SELF)
    result = train(cfg)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - t0
    model_id = registry.register_model(ws, result.model_dir, dataset_id, train_config=cfg.to_dict(),
                                       metrics=result.metrics)
    held = score_heldout(ws, model_id)
    return {"home": str(home), "dataset_id": dataset_id, "model_id": model_id, "train_wall_s": wall,
            "train_cpu_s": (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime),
            "load_start": load0, "load_end": os.getloadavg()[0], "check": held["reward_check"],
            "picture": held["picture"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--homes", nargs="+", required=True, help="workspaces of finished `sfr demo` runs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results = []
    for h in args.homes:
        r = run_one(Path(h), args.overrides)
        lab, tru = r["check"]["vs_labels"], r["check"]["vs_truth"]
        print(f"{h}: SRCC labels {lab['region_srcc_mean']:.3f} truth {tru['region_srcc_mean']:.3f}; "
              f"AUROC labels {lab['localization_auroc']:.3f} (n={lab['n_localization']}) "
              f"truth {tru['localization_auroc']:.3f} (n={tru['n_localization']}); "
              f"train {r['train_wall_s']:.0f} s wall, {r['train_cpu_s']:.0f} s CPU, "
              f"load {r['load_start']:.1f} -> {r['load_end']:.1f}; picture {r['picture']}", flush=True)
        results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
