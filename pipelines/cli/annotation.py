"""`sfr labelstudio up|down|status` and `sfr annotate push|sync|gold|import`."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from annotation import server
from annotation.client import LabelStudioError, connection
from pipelines.cli import CLIError, labelstudio_db, print_json
from pipelines.configs import Flags
from warehouse.db import WarehouseError
from warehouse.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser("labelstudio", help="run a local Label Studio server for this workspace")
    lsub = ls.add_subparsers(dest="ls_command", metavar="ACTION", required=True)
    up = lsub.add_parser("up", help="start it (bound to 127.0.0.1) unless it runs; print status JSON")
    up.add_argument("--port", type=int, default=None, help=f"port (default {server.DEFAULT_PORT}, or a free one)")
    up.add_argument("--timeout", type=float, default=server.DEFAULT_START_TIMEOUT_S,
                    help="seconds to wait for /health (first start migrates a database: ~1 min)")
    up.add_argument("--db", choices=["sqlite", "postgres"], default=None,
                    help="database (default: what this workspace first used; SQLite when new)")
    up.set_defaults(func=cmd_up)
    lsub.add_parser("down", help="stop it (by its pid file)").set_defaults(func=cmd_down)
    lsub.add_parser("status", help="status JSON (never the token); exit 1 if the data dir is open to "
                                   "group/others or the pid file is stale").set_defaults(func=cmd_status)
    inv = lsub.add_parser("invite", help="print the invite link annotators sign up with (signup "
                                         "without it is disabled)")
    inv.add_argument("--reset", action="store_true", help="issue a new link; every earlier link stops working")
    inv.set_defaults(func=cmd_invite)
    labelstudio_db.register(lsub)

    an = sub.add_parser("annotate", help="push tasks to Label Studio and sync annotations back")
    asub = an.add_subparsers(dest="annotate_command", metavar="ACTION", required=True)
    p = asub.add_parser("push", help="push a batch (or samples) as tasks with prefilled regions")
    p.add_argument("--project", required=True, help="project key, e.g. sfreward-v1")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--batch", help="batch id")
    g.add_argument("--samples", nargs="+", help="sample ids")
    p.add_argument("--gold", nargs="*", default=[], help="sample ids that are gold tasks")
    _push_flags().add_to(p)
    p.set_defaults(func=cmd_push)
    s = asub.add_parser("sync", help="pull new, changed and deleted annotations since the last sync")
    s.add_argument("--project", required=True, help="project key")
    s.set_defaults(func=cmd_sync)
    gd = asub.add_parser("gold", help="store known answers of gold tasks from a JSON file "
                                      "(all or nothing), or print a template to fill in")
    gd.add_argument("file", nargs="?", help='JSON: {sample_id: {"image": {dimension: 1..5}, '
                                            '"regions": {region_id: {dimension: 1..5}}}}; null = no answer')
    gd.add_argument("--template", nargs="+", metavar="SAMPLE_ID", help="print a template for these samples instead")
    gd.set_defaults(func=cmd_gold)
    im = asub.add_parser("import", help="import annotations from a Label Studio JSON export (marked 'imported' "
                                        "with the file's sha256; the same file twice changes nothing)")
    im.add_argument("export", help="the export file (Label Studio: Export -> JSON)")
    im.add_argument("--project", required=True, help="project key to store them under (not a live-synced one)")
    im.add_argument("--mapping", default=None, help="YAML mapping an older labelling config onto ours "
                                                     "(from_name, to_name, labels, choices, data)")
    im.add_argument("--ls-url", default=None, help="the Label Studio the export came from (annotator ids); "
                                                    "default: the project's server if pushed from here")
    im.set_defaults(func=cmd_import)


def _push_flags() -> Flags:
    from annotation.push import PushConfig

    return Flags(PushConfig, ("overlap", "region_config_hash"), names={"region_config_hash": "region-config"})


def cmd_up(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    try:
        print_json(server.up_workspace(ws, port=args.port, timeout_s=args.timeout, db=args.db))
    except server.ServerError as e:
        raise CLIError(str(e)) from None
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    stale = server.status_workspace(ws).get("stale_pid_file")
    try:
        out = server.down_workspace(ws)
    except server.ServerError as e:
        raise CLIError(str(e)) from None
    if stale:
        print(f"sfr labelstudio down: {stale}; removed the pid file, signalled nothing", file=sys.stderr)
    print_json(out)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = server.status_workspace(Workspace.open(args.home))
    print_json(st)
    for problem in st["permission_problems"]:
        print(f"sfr labelstudio status: {problem}; `sfr labelstudio up` makes the data dir private "
              "(0700 folders, 0600 files)", file=sys.stderr)
    if st.get("stale_pid_file"):
        print(f"sfr labelstudio status: {st['stale_pid_file']}; `sfr labelstudio down` removes it",
              file=sys.stderr)
    return 1 if st["permission_problems"] or st.get("stale_pid_file") else 0


def cmd_invite(args: argparse.Namespace) -> int:
    from annotation.client import invite_link

    ws = Workspace.open(args.home)
    try:
        print(invite_link(connection(ws), reset=args.reset))
    except LabelStudioError as e:
        raise CLIError(str(e)) from None
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from annotation.push import PushError, push_batch

    ws = Workspace.open(args.home)
    bar = tqdm(desc="push", unit="task", file=sys.stderr, disable=None)
    try:
        summary = push_batch(ws, args.project, batch_id=args.batch, sample_ids=args.samples, gold=args.gold,
                             config=_push_flags().build(args),
                             conn=connection(ws), progress=bar.update)
    except (PushError, LabelStudioError, WarehouseError) as e:
        raise CLIError(str(e)) from None
    finally:
        bar.close()
    print_json(summary.as_dict())
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from annotation.sync import SyncError, sync_project

    ws = Workspace.open(args.home)
    bar = tqdm(desc="sync", unit="task", file=sys.stderr, disable=None)
    try:
        summary = sync_project(ws, args.project, conn=connection(ws), progress=bar.update)
    except (SyncError, LabelStudioError, WarehouseError) as e:
        raise CLIError(str(e)) from None
    finally:
        bar.close()
    print_json(summary.as_dict())
    return 0


def cmd_gold(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from warehouse.curation.gold import gold_template, record_gold_many

    ws = Workspace.open(args.home)
    try:
        if args.template:
            print_json(gold_template(ws, args.template))
            return 0
        if not args.file:
            raise CLIError("give a JSON file of gold answers, or --template SAMPLE_ID ... to get one to fill in")
        try:
            answers = json.loads(Path(args.file).read_text())
        except FileNotFoundError:
            raise CLIError(f"{args.file}: no such file") from None
        except json.JSONDecodeError as e:
            raise CLIError(f"{args.file}: not valid JSON ({e})") from None
        print_json({"stored": record_gold_many(ws, answers), "samples": len(answers)})
    except ValueError as e:
        raise CLIError(f"{args.file or 'gold'}: {e}; nothing was stored") from None
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from annotation.importer import ImportFileError, ImportMapping, import_export

    ws = Workspace.open(args.home)
    try:
        mapping = ImportMapping.from_yaml(args.mapping) if args.mapping else None
        summary = import_export(ws, args.export, args.project, mapping, ls_url=args.ls_url)
    except (ImportFileError, WarehouseError) as e:
        raise CLIError(f"{e}; nothing was imported") from None
    print_json(summary.as_dict())
    return 0
