"""The `sfr` command line. Each command group lives in its own module in this package and
exposes `register(subparsers)`; commands get `args.home` (the --home flag) and print JSON or
human-readable progress. Errors are reported as one line naming the input and what to do.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import sys

GROUPS = ["core", "regions", "annotation", "dataset", "models", "serving", "demo", "rundemo"]


_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the workspace is on a read-only file system",
                errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
                errno.EFBIG: "file too large for this file system"}


class CLIError(Exception):
    """An error to show the user as one line (no traceback), exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sfr", description="SFReward data and reward-model platform")
    p.add_argument("--home", default=None,
                   help="workspace directory (default: $SFR_HOME, else ~/sfr-home)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        try:
            mod = importlib.import_module(f"pipelines.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"pipelines.cli.{name}":
                continue
            raise
        mod.register(sub)
    return p


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # per-request chatter of HTTP clients and migrations hides progress
        for noisy in ("httpx", "httpcore", "alembic", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from warehouse.db import WarehouseCorrupt

    try:
        rc = args.func(args)
    except WarehouseCorrupt as e:  # any command that opens a damaged warehouse: what to do, no traceback
        print(f"sfr {args.command}: error: {e}", file=sys.stderr)
        return 4
    except CLIError as e:
        print(f"sfr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno in _DISK_ERRORS:
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            print(f"sfr {args.command}: error: {_DISK_ERRORS[e.errno]}{where}. Nothing half-written was "
                  "committed; free space or fix permissions (or pick another --home) and rerun.", file=sys.stderr)
            return 3
        raise
    except Exception as e:  # DuckDB reports disk problems as its own IOException
        msg = str(e)
        if type(e).__name__ == "IOException" and ("No space" in msg or "Read-only" in msg):
            print(f"sfr {args.command}: error: the warehouse could not write: {msg.splitlines()[0]}. Nothing "
                  "half-written was committed; free space or fix permissions and rerun.", file=sys.stderr)
            return 3
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
