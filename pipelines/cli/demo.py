"""`sfr synth`, `sfr experiment credit`, `sfr multiedit build|score` (and, from the lead,
`sfr demo`). Each subcommand has its own `register_*` function and a `cmd_*` handler that is a
thin layer over a plain function in `sfreward`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.cli import CLIError, print_json
from pipelines.configs import Flags
from warehouse.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    register_synth(sub)
    register_experiment(sub)
    register_multiedit(sub)


# -- sfr synth ------------------------------------------------------------------------------
def register_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate synthetic editing samples with per-region ground truth")
    p.add_argument("--out", default=None,
                   help="output folder (default: <home>/batches/synth-seed<SEED>)")
    _synth_flags().add_to(p)
    p.set_defaults(func=cmd_synth)


def _synth_flags() -> Flags:
    from sfreward.synthetic import SynthConfig

    return Flags(SynthConfig, ("n_sources", "groups_per_source", "rollouts", "image_size", "n_regions", "seed",
                               "source_dir"), names={"image_size": "size", "n_regions": "regions"})


def cmd_synth(args: argparse.Namespace) -> int:
    from sfreward.synthetic import generate
    cfg = _synth_flags().build(args)
    out = Path(args.out) if args.out else Workspace.open(args.home).batches / f"synth-seed{args.seed}"
    try:
        cfg.validate()
        manifest = generate(out, cfg, progress=True)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    print_json({"manifest": str(manifest), "ground_truth": str(manifest.parent / "ground_truth.jsonl"),
                "n_samples": len(rows), "n_groups": len({r["group_id"] for r in rows}),
                "next": f"sfr ingest {manifest}"})
    return 0


# -- sfr experiment credit ------------------------------------------------------------------
def register_experiment(sub: argparse._SubParsersAction) -> None:
    from sfreward.experiments.credit import ExperimentConfig
    d = ExperimentConfig()
    p = sub.add_parser("experiment", help="experiments the platform runs on itself")
    s = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    c = s.add_parser("credit", help="GRPO with region advantages vs whole-image advantages (CPU, minutes)")
    c.add_argument("--out", default=None, help="output folder (default: <home>/reports/credit_experiment)")
    _credit_flags().add_to(c)
    c.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="comma-separated seeds")
    c.set_defaults(func=cmd_experiment_credit)
    from pipelines.cli.experiment import register_grpo
    register_grpo(s)


def cmd_experiment_credit(args: argparse.Namespace) -> int:
    from sfreward.experiments.credit import run_credit_experiment
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    cfg = _credit_flags().build(args, seeds=seeds)
    out = Path(args.out) if args.out else Workspace.open(args.home).reports / "credit_experiment"
    try:
        res = run_credit_experiment(cfg, out, progress=True, command="sfr " + " ".join(sys.argv[1:]))
    except ValueError as e:
        raise CLIError(str(e)) from None
    print_json({"summary": res["summary"], "wall_s": res["wall_s"], **res["paths"]})
    return 0


def _credit_flags() -> Flags:
    from sfreward.experiments.credit import ExperimentConfig

    return Flags(ExperimentConfig, ("steps", "n_prompts", "group_size", "threshold"), names={"n_prompts": "prompts"})


# -- sfr multiedit build|score --------------------------------------------------------------
def register_multiedit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("multiedit", help="MultiEditBench: multi-region edit instructions and a per-region scorer")
    s = p.add_subparsers(dest="multiedit", metavar="ACTION", required=True)
    b = s.add_parser("build", help="write the bench (sources, instructions, regions, reference edits)")
    b.add_argument("--out", default=None, help="bench folder (default: <home>/datasets/multiedit)")
    _multiedit_flags().add_to(b)
    b.set_defaults(func=cmd_multiedit_build)
    sc = s.add_parser("score", help="score an editor's outputs (<item_id>.png files) per region")
    sc.add_argument("--bench", default=None, help="bench folder (default: <home>/datasets/multiedit)")
    sc.add_argument("outputs", help="folder with one <item_id>.png per bench item")
    sc.add_argument("--report", default=None, help="also write the full per-region JSON here")
    sc.set_defaults(func=cmd_multiedit_score)


def _multiedit_flags() -> Flags:
    from sfreward.multiedit import MultiEditConfig

    return Flags(MultiEditConfig, ("n_items", "n_targets", "image_size", "seed", "source_dir"),
                 names={"image_size": "size"})


def cmd_multiedit_build(args: argparse.Namespace) -> int:
    from sfreward.multiedit import build
    cfg = _multiedit_flags().build(args)
    out = Path(args.out) if args.out else Workspace.open(args.home).datasets / "multiedit"
    try:
        path = build(out, cfg)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    n = sum(1 for line in path.read_text().splitlines() if line.strip())
    print_json({"bench": str(path), "n_items": n, "sources": str(out / "sources"),
                "reference_outputs": str(out / "reference")})
    return 0


def cmd_multiedit_score(args: argparse.Namespace) -> int:
    from sfreward.multiedit import score
    bench = Path(args.bench) if args.bench else Workspace.open(args.home).datasets / "multiedit"
    if not Path(args.outputs).is_dir():
        raise CLIError(f"outputs folder {args.outputs} does not exist")
    try:
        res = score(bench, args.outputs)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    if args.report:
        Path(args.report).write_text(json.dumps(res, indent=1))
    errors = {r["item_id"]: r["status"] for r in res["items"] if r["status"] != "ok"}
    print_json({"summary": res["summary"], "errors": errors, "report": args.report})
    return 0

