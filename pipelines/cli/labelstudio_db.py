"""`sfr labelstudio db start|stop|status`, `sfr labelstudio backup FILE`, `sfr labelstudio restore FILE`:
the workspace's PostgreSQL cluster (annotation.postgres) that `sfr labelstudio up --db postgres` uses."""
from __future__ import annotations

import argparse
from pathlib import Path

from annotation import postgres
from pipelines.cli import CLIError, print_json
from warehouse.workspace import Workspace


def register(lsub: argparse._SubParsersAction) -> None:
    db = lsub.add_parser("db", help="the workspace's PostgreSQL server (<home>/postgres, 127.0.0.1 only)")
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dsub.add_parser("start", help="initialise (first time) and start it").set_defaults(func=cmd_db_start)
    dsub.add_parser("stop", help="stop it (after `sfr labelstudio down`)").set_defaults(func=cmd_db_stop)
    dsub.add_parser("status", help="status JSON (never the password)").set_defaults(func=cmd_db_status)
    b = lsub.add_parser("backup", help="pg_dump Label Studio's PostgreSQL database to FILE (0600: it holds tokens)")
    b.add_argument("file", help="output file (pg_dump custom format)")
    b.set_defaults(func=cmd_backup)
    r = lsub.add_parser("restore", help="pg_restore a backup into Label Studio's database (stop Label Studio first)")
    r.add_argument("file", help="a file written by `sfr labelstudio backup`")
    r.add_argument("--into", default=None, help="database name (default: the one Label Studio uses)")
    r.add_argument("--replace", action="store_true", help="drop the existing database first")
    r.set_defaults(func=cmd_restore)


def _cluster_and_db(ws: Workspace) -> tuple[postgres.Cluster, str]:
    choice = postgres.read_choice(ws.labelstudio)
    if choice is None:
        return postgres.Cluster.for_home(ws.home), postgres.LS_DATABASE
    return postgres.Cluster(Path(choice["cluster"])), choice["name"]


def _run(fn):
    try:
        print_json(fn())
    except postgres.PostgresError as e:
        raise CLIError(str(e)) from None
    return 0


def cmd_db_start(args: argparse.Namespace) -> int:
    return _run(lambda: postgres.start(_cluster_and_db(Workspace.open(args.home))[0]))


def cmd_db_stop(args: argparse.Namespace) -> int:
    return _run(lambda: postgres.stop(_cluster_and_db(Workspace.open(args.home))[0]))


def cmd_db_status(args: argparse.Namespace) -> int:
    def st():
        cluster, name = _cluster_and_db(Workspace.open(args.home))
        return {**postgres.status(cluster), "labelstudio_database": name}
    return _run(st)


def cmd_backup(args: argparse.Namespace) -> int:
    ws = Workspace.open(args.home)
    if postgres.read_choice(ws.labelstudio) is None:
        raise CLIError(f"Label Studio of {ws.home} does not use PostgreSQL; back up its SQLite data dir "
                       f"({ws.labelstudio}) with the server stopped instead")
    cluster, name = _cluster_and_db(ws)
    return _run(lambda: postgres.backup(cluster, name, Path(args.file)))


def cmd_restore(args: argparse.Namespace) -> int:
    from annotation import server

    ws = Workspace.open(args.home)
    cluster, name = _cluster_and_db(ws)
    target = args.into or name
    if target == name and server.status_workspace(ws)["running"]:
        raise CLIError("Label Studio is running on that database; `sfr labelstudio down` first")
    return _run(lambda: postgres.restore(cluster, Path(args.file), target, replace=args.replace))
