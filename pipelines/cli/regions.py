"""`sfr propose`: region proposals for ingested batches (one set per GRPO group)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from pipelines.cli import CLIError, print_json
from sfreward.regions import CheckpointError, ProposalError, ProposerConfig
from sfreward.regions.group import all_groups, groups_of_batch, propose_for_groups
from warehouse.db import WarehouseError
from warehouse.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("propose", help="propose regions (SAM or classical) for ingested samples")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--batch", action="append", metavar="BATCH_ID",
                       help="a batch id (repeatable)")
    which.add_argument("--all", action="store_true", help="every group in the warehouse")
    p.add_argument("--checkpoint", default=os.environ.get("SFR_SAM_CHECKPOINT"),
                   help="local SAM checkpoint (default $SFR_SAM_CHECKPOINT; none = classical proposer)")
    p.add_argument("--model-type", default=os.environ.get("SFR_SAM_MODEL_TYPE"),
                   choices=["vit_h", "vit_l", "vit_b", "tiny"],
                   help="SAM model type of the checkpoint (default $SFR_SAM_MODEL_TYPE, else vit_b)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--config", type=Path, default=None,
                   help="JSON file of ProposerConfig fields (flags override it)")
    p.add_argument("--name", default=None, help="config name recorded with the region sets")
    p.add_argument("--points-per-side", type=int, default=None)
    p.add_argument("--max-regions", type=int, default=None)
    p.set_defaults(func=cmd_propose)


def _config(args: argparse.Namespace) -> ProposerConfig:
    fields: dict = {}
    if args.config is not None:
        try:
            fields = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CLIError(f"--config {args.config}: cannot read JSON ({e})") from None
        if not isinstance(fields, dict):
            raise CLIError(f"--config {args.config}: expected a JSON object of config fields")
    if args.checkpoint:
        fields["checkpoint"] = args.checkpoint
        fields["model_type"] = args.model_type or fields.get("model_type") or "vit_b"
    elif args.model_type:
        raise CLIError(f"--model-type {args.model_type} needs --checkpoint (or $SFR_SAM_CHECKPOINT)")
    fields["device"] = args.device
    for flag, key in (("name", "name"), ("points_per_side", "points_per_side"),
                      ("max_regions", "max_regions")):
        if getattr(args, flag) is not None:
            fields[key] = getattr(args, flag)
    try:
        return ProposerConfig.from_dict(fields)
    except (ProposalError, TypeError) as e:
        raise CLIError(f"proposer config: {e}") from None


def cmd_propose(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    config = _config(args)
    try:
        if args.all:
            groups = all_groups(ws)
        else:
            groups = []
            for b in args.batch:
                groups += groups_of_batch(ws, b)
    except LookupError as e:
        raise CLIError(str(e)) from None
    except WarehouseError as e:
        raise CLIError(str(e)) from None
    if config.model_type:
        # Load once up front so a bad checkpoint is one clear error, not one per group.
        from sfreward.regions.sam import load_sam
        try:
            load_sam(config.checkpoint, config.model_type, config.device)
        except (CheckpointError, ProposalError) as e:
            raise CLIError(str(e)) from None
    bar = tqdm(total=len(groups), desc=f"propose ({config.proposer})", unit="group",
               file=sys.stderr, disable=None)
    try:
        summary = propose_for_groups(ws, groups, config, progress=lambda _gid: bar.update())
    finally:
        bar.close()
    summary["batches"] = args.batch or "all"
    print_json(summary)
    return 1 if summary["n_failed"] else 0
