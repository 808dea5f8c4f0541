"""`sfr ingest PATH` and `sfr status`."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from pipelines.cli import CLIError, print_json
from warehouse.db import Warehouse, WarehouseError
from warehouse.ingest import IngestConfig, ManifestError, ingest_path
from warehouse.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="ingest editing samples from a JSONL manifest or a parquet dataset")
    p.add_argument("path", help="manifest.jsonl, a .parquet file, or a directory of parquet shards")
    p.add_argument("--max-pixels", type=int, default=IngestConfig.max_pixels,
                   help="refuse images above this many pixels (decompression bombs)")
    p.set_defaults(func=cmd_ingest)

    s = sub.add_parser("status", help="warehouse row counts and schema version as JSON")
    s.set_defaults(func=cmd_status)


def cmd_ingest(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    bar = tqdm(desc="ingest", unit="row", file=sys.stderr, disable=None)
    try:
        summary = ingest_path(ws, args.path, IngestConfig(max_pixels=args.max_pixels), progress=bar.update)
    except ManifestError as e:
        raise CLIError(str(e)) from None
    except WarehouseError as e:
        raise CLIError(f"{e}") from None
    finally:
        bar.close()
    print_json(summary.as_dict())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    wh = Warehouse.open(ws)
    print_json({"home": str(ws.home), "schema_version": wh.schema_version(), "tables": wh.counts()})
    return 0
