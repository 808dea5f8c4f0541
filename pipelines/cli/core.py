"""`sfr ingest PATH`, `sfr status [--check]`, `sfr snapshot ROOT` and `sfr restore ROOT`."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from pipelines.cli import CLIError, print_json
from warehouse.db import Warehouse, WarehouseCorrupt, WarehouseError
from warehouse.ingest import IngestConfig, ManifestError, ingest_path
from warehouse.lake import LakeWarehouse, export_snapshot
from warehouse.sources import FIELDS, PRESETS, MappingError, SourceOptions, parse_map
from warehouse.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="ingest editing samples from a JSONL manifest or a parquet dataset")
    p.add_argument("path", help="manifest.jsonl, a .parquet file, a directory of parquet shards, or a "
                                "Hugging Face save_to_disk folder")
    p.add_argument("--max-pixels", type=int, default=IngestConfig.max_pixels,
                   help="refuse images above this many pixels (decompression bombs)")
    p.add_argument("--schema", choices=sorted(PRESETS), default=None,
                   help="column names of a public schema: " + "; ".join(
                       f"{k}: {', '.join(f'{f}={c}' for f, c in v.items())}" for k, v in sorted(PRESETS.items())))
    p.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help=f"which column holds one of our fields ({', '.join(FIELDS)}); repeatable, "
                        "overrides the --schema preset")
    p.set_defaults(func=cmd_ingest)

    s = sub.add_parser("status", help="warehouse row counts, schema version and a cheap integrity check as JSON")
    s.add_argument("--check", action="store_true",
                   help="full integrity check: read every row of every table (exit 1 if any fails)")
    s.add_argument("--snapshot", metavar="ROOT", default=None,
                   help="read a parquet snapshot under ROOT (its LATEST) instead of the DuckDB file")
    s.set_defaults(func=cmd_status)

    sn = sub.add_parser("snapshot", help="export the warehouse as hive-partitioned parquet under ROOT "
                                         "(a new immutable snapshot; ROOT/LATEST points at it)")
    sn.add_argument("root", help="snapshot root: a local directory or a mounted bucket")
    sn.add_argument("--id", default=None, help="snapshot id (default: the UTC time)")
    sn.set_defaults(func=cmd_snapshot)

    r = sub.add_parser("restore", help="replace a damaged warehouse with a snapshot under ROOT (its LATEST); "
                                       "the damaged file is kept next to it")
    r.add_argument("root", help="snapshot root given to `sfr snapshot`")
    r.add_argument("--id", default=None, help="snapshot id (default: LATEST)")
    r.set_defaults(func=cmd_restore)


def cmd_ingest(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    try:
        options = SourceOptions(args.schema, parse_map(args.map))
    except MappingError as e:
        raise CLIError(str(e)) from None
    bar = tqdm(desc="ingest", unit="row", file=sys.stderr, disable=None)
    try:
        summary = ingest_path(ws, args.path, IngestConfig(max_pixels=args.max_pixels, source_options=options),
                              progress=bar.update)
    except ManifestError as e:
        raise CLIError(str(e)) from None
    except WarehouseCorrupt:
        raise  # reported centrally (exit 4), like every other command
    except WarehouseError as e:
        raise CLIError(f"{e}") from None
    finally:
        bar.close()
    print_json(summary.as_dict())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.snapshot:
        try:
            lake = LakeWarehouse.open(args.snapshot)
        except WarehouseError as e:
            raise CLIError(str(e)) from None
        print_json({"snapshot": str(lake.snapshot.path), "schema_version": lake.schema_version(),
                    "tables": lake.counts()})
        return 0
    ws = Workspace.open(args.home)
    wh = Warehouse.open(ws)  # opening runs the cheap check (the file's length against its block count)
    out = {"home": str(ws.home), "schema_version": wh.schema_version(), "tables": wh.counts(),
           "integrity": {"quick": "ok"}}
    if args.check:
        failed = wh.full_check()
        out["integrity"]["full"] = "ok" if not failed else {"failed_tables": failed}
        if failed:
            print_json(out)
            first = next(iter(failed))
            raise WarehouseCorrupt(wh.path, f"{len(failed)} of {len(out['tables'])} tables fail a full read, "
                                            f"e.g. {first}: {failed[first]}")
    print_json(out)
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    try:
        snap = export_snapshot(Warehouse.open(ws), args.root, args.id)
    except WarehouseError as e:
        raise CLIError(str(e)) from None
    print_json({"snapshot_id": snap.snapshot_id, "path": str(snap.path), "schema_version": snap.schema_version,
                "rows": snap.rows})
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from warehouse.restore import restore_snapshot

    ws = Workspace.open(args.home)
    try:
        print_json(restore_snapshot(ws.warehouse_path, args.root, args.id))
    except WarehouseError as e:
        raise CLIError(str(e)) from None
    return 0
