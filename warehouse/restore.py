"""Rebuild the DuckDB warehouse from a parquet snapshot (`sfr snapshot ROOT` makes them).

For a damaged warehouse file (`sfr status --check` fails, or any command says "damaged"): a
new file is built next to it from the snapshot (every table, migrated to this code's schema:
columns added after the snapshot get their defaults), the damaged file is kept as
`warehouse.duckdb.damaged-<UTC time>`, and the new one takes its place in one rename, under
the warehouse lock. Whatever was written after the snapshot is not in it: rerun those
ingests and syncs (both are idempotent).
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from warehouse.db import Warehouse, WarehouseError
from warehouse.lake import LakeWarehouse, _lit, _quote


def restore_snapshot(target: Path, root: str | os.PathLike, snapshot_id: str | None = None) -> dict:
    """Replace the warehouse file `target` with the snapshot under `root` (its LATEST by default).
    Returns {"snapshot_id", "rows": {table: n}, "kept_damaged_as": path or None}."""
    lake = LakeWarehouse.open(root, snapshot_id)
    target = Path(target)
    fresh = target.with_name(target.name + ".restoring")
    for p in (fresh, Path(str(fresh) + ".wal")):
        p.unlink(missing_ok=True)
    new = Warehouse.open(fresh)  # every migration: the schema this code expects
    if lake.schema_version() > new.schema_version():
        fresh.unlink()
        raise WarehouseError(f"snapshot {lake.snapshot.snapshot_id} has schema version {lake.schema_version()}, "
                             f"newer than this code ({new.schema_version()}); upgrade sfreward-platform first")
    rows = {}
    with lake.read() as con:
        con.execute(f"ATTACH {_lit(fresh)} AS fresh")
        have = {t: [c for (c,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'fresh' AND table_name = ? "
            "ORDER BY ordinal_position", [t]).fetchall()] for t in lake.snapshot.tables}
        con.execute("BEGIN TRANSACTION")
        for t, meta in lake.snapshot.tables.items():
            if t == "schema_version" or not have[t]:
                continue
            cols = ", ".join(_quote(c) for c, _ in meta["columns"] if c in have[t])
            con.execute(f"INSERT INTO fresh.main.{_quote(t)} ({cols}) SELECT {cols} FROM {_quote(t)}")
            rows[t] = int(con.execute(f"SELECT count(*) FROM fresh.main.{_quote(t)}").fetchone()[0])
        con.execute("COMMIT")
        con.execute("DETACH fresh")
    kept = None
    with Warehouse(target)._locked():
        if target.exists():
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            kept = target.with_name(f"{target.name}.damaged-{stamp}")
            os.replace(target, kept)
            wal = Path(str(target) + ".wal")
            if wal.exists():
                os.replace(wal, Path(str(kept) + ".wal"))
        os.replace(fresh, target)
    return {"snapshot_id": lake.snapshot.snapshot_id, "rows": rows, "kept_damaged_as": str(kept) if kept else None}
