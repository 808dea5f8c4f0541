"""`sfr dataset build|list|show|export`: versioned SFReward datasets (warehouse.curation)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from pipelines.cli import CLIError, print_json
from pipelines.configs import Flags
from warehouse.curation import CurationConfig, build_dataset, export_hf, export_reward_json, export_sft
from warehouse.curation.checks import (check_agreement_floor, check_labels_complete, check_masks_decode,
                                       check_no_leakage, check_no_near_duplicate_sources)
from warehouse.curation.dataset import get_version, list_versions
from warehouse.datasets import DatasetNotFound, recorded_exports, resolve_dataset_id
from warehouse.db import Warehouse
from warehouse.workspace import Workspace

# CurationConfig fields with a flag of their own (None: not given, the file/--set/default decides).
BUILD_FLAGS = Flags(CurationConfig, ("seed", "name", "default_ratings"),
                    defaults={"seed": None, "name": None, "default_ratings": None})
EXPORTS = {"hf": export_hf, "reward_json": export_reward_json, "sft": export_sft}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="build, list, show and export versioned datasets")
    dsub = p.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")

    b = dsub.add_parser("build", help="curate the warehouse into a dataset version (id = content hash)")
    b.add_argument("--config", help="JSON file with CurationConfig fields")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (VALUE parsed as JSON, else a string); repeatable")
    BUILD_FLAGS.add_to(b)
    b.set_defaults(func=cmd_build)

    ls = dsub.add_parser("list", help="recorded dataset versions, newest first")
    ls.set_defaults(func=cmd_list)

    s = dsub.add_parser("show", help="one version: config, counts, exclusions, agreement, checks")
    s.add_argument("dataset_id", help="a dataset id, a unique prefix of one, or 'latest'")
    s.set_defaults(func=cmd_show)

    e = dsub.add_parser("export", help="write exports of a version under <home>/datasets/<id>/")
    e.add_argument("dataset_id", help="a dataset id, a unique prefix of one, or 'latest'")
    e.add_argument("--format", choices=[*EXPORTS, "all"], default="all")
    e.set_defaults(func=cmd_export)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _config(args: argparse.Namespace) -> CurationConfig:
    d: dict = {}
    if args.config:
        path = Path(args.config)
        try:
            d = json.loads(path.read_text())
        except OSError as e:
            raise CLIError(f"cannot read curation config {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise CLIError(f"curation config {path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise CLIError(f"curation config {path} must be a JSON object")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--set {item!r}: expected KEY=VALUE")
        try:
            d[key] = json.loads(value)
        except json.JSONDecodeError:
            d[key] = value
    d.update(BUILD_FLAGS.values(args))   # flags win over the file and --set
    try:
        return CurationConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise CLIError(f"bad curation config: {e}") from None


def resolve_id(ws: Workspace, ref: str) -> str:
    try:
        return resolve_dataset_id(ws, ref)
    except DatasetNotFound as e:
        raise CLIError(str(e)) from None


def _summary(v) -> dict:
    return {"dataset_id": v.dataset_id, "name": v.name, "created_at": v.created_at, "rows": v.n_rows,
            "regions": v.n_regions, "splits": v.split_counts}


def cmd_build(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    config = _config(args)
    print("curating (agreement, aggregation, filters, splits) ...", file=sys.stderr)
    v = build_dataset(ws, config)
    print_json(v.to_dict())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    print_json([_summary(v) for v in list_versions(ws)])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    dataset_id = resolve_id(ws, args.dataset_id)
    out = get_version(ws, dataset_id).to_dict()
    out.pop("timings_s", None)
    checks = {}
    for name, fn in (("no_split_leakage", check_no_leakage),
                     ("no_near_duplicate_sources", check_no_near_duplicate_sources), ("labels_complete", check_labels_complete),
                     ("agreement_above_floor", check_agreement_floor), ("region_masks_decode", check_masks_decode)):
        passed, details = fn(ws, dataset_id)
        checks[name] = {"passed": passed, **details}
    out["checks"] = checks
    out["exports"] = recorded_exports(Warehouse.open(ws), dataset_id)
    print_json(out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    dataset_id = resolve_id(ws, args.dataset_id)
    formats = list(EXPORTS) if args.format == "all" else [args.format]
    paths = {}
    for fmt in tqdm(formats, desc=f"export {dataset_id}", unit="format", file=sys.stderr, disable=None):
        paths[fmt] = str(EXPORTS[fmt](ws, dataset_id))
    print_json({"dataset_id": dataset_id, "exports": paths})
    return 0
