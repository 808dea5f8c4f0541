"""`sfr train`, `sfr evaluate`, `sfr models list|show|promote`."""
from __future__ import annotations

import argparse

from pipelines.cli import CLIError, print_json
from pipelines.configs import Flags


def train_flags() -> Flags:
    """`sfr train`'s flags, from sfreward.train.config.TrainRequest (flag names kept)."""
    from sfreward.train.config import TrainRequest
    return Flags(TrainRequest, ("dataset_id", "config_file", "preset", "overrides", "nproc"),
                 names={"dataset_id": "dataset", "config_file": "config", "overrides": "set"},
                 defaults={"dataset_id": None, "config_file": None, "preset": None})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an SFReward model on a dataset version and register it")
    train_flags().add_to(p)
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a registered model on a dataset split and record it")
    p.add_argument("model", help="model id or alias (candidate, production)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="test")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="the model registry")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    q = msub.add_parser("list", help="registered models and their aliases")
    q.set_defaults(func=cmd_list)
    q = msub.add_parser("show", help="one model: card, lineage, evaluations")
    q.add_argument("model", help="model id or alias")
    q.set_defaults(func=cmd_show)
    q = msub.add_parser("promote", help="point an alias at a model (production is gated)")
    q.add_argument("model", nargs="?", default="candidate", help="model id or alias (default candidate)")
    q.add_argument("--alias", default="production")
    q.add_argument("--dataset", help="compare on this dataset's evaluation (default: latest shared)")
    q.add_argument("--split", default="test")
    q.add_argument("--tolerance", type=float, default=0.0, help="allowed drop per gate metric")
    q.add_argument("--force", action="store_true", help="skip the promotion gate")
    q.set_defaults(func=cmd_promote)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _ws(args):
    from warehouse.workspace import Workspace
    return Workspace.open(args.home)


def cmd_train(args) -> int:
    from sfreward.train.api import subprocess_runner, train_and_register
    from warehouse.datasets import current_dataset_id
    req = train_flags().build(args)
    try:
        cfg = req.train_config()
    except (ValueError, OSError) as e:
        raise CLIError(str(e)) from e
    if req.nproc < 1:
        raise CLIError("--nproc must be >= 1")
    ws = _ws(args)
    try:
        # No --dataset: the one rule for the current dataset (newest version with an hf export).
        dataset_id = req.dataset_id or current_dataset_id(ws, export="hf")
        model_id = train_and_register(ws, dataset_id, cfg,
                                      runner=subprocess_runner(req.nproc) if req.nproc > 1 else None,
                                      eval_split="" if args.no_eval else "test")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise CLIError(str(e)) from e
    from sfreward import registry
    rec = registry.get_model(ws, model_id)
    print_json({"model_id": model_id, "aliases": rec["aliases"], "path": rec["path"],
                "evaluations": rec["evaluations"]})
    return 0


def cmd_evaluate(args) -> int:
    from sfreward import registry
    from sfreward.train.api import evaluate_and_record
    try:
        metrics = evaluate_and_record(_ws(args), args.model, args.dataset, args.split)
    except (registry.RegistryError, FileNotFoundError, registry.ArtifactError) as e:
        raise CLIError(str(e)) from e
    print_json({"model": args.model, "dataset": args.dataset, "split": args.split, "metrics": metrics})
    return 0


def cmd_list(args) -> int:
    from sfreward import registry
    print_json(registry.list_models(_ws(args)))
    return 0


def cmd_show(args) -> int:
    from sfreward import registry
    try:
        print_json(registry.get_model(_ws(args), args.model))
    except registry.RegistryError as e:
        raise CLIError(str(e)) from e
    return 0


def cmd_promote(args) -> int:
    from sfreward import registry
    try:
        gate = registry.promote(_ws(args), args.model, alias=args.alias, force=args.force,
                                dataset_id=args.dataset, split=args.split, tolerance=args.tolerance)
    except (registry.RegistryError, registry.ArtifactError) as e:
        raise CLIError(str(e)) from e
    print_json({"promoted": gate.candidate, "alias": args.alias, "gate": gate.reason,
                "comparison": gate.comparison})
    return 0
