"""The warehouse growth path: snapshots as hive-partitioned parquet, read through the same API.

One DuckDB file serves one machine. Beyond it, many readers (curation jobs on a cluster,
notebooks) query parquet on shared storage while the writers stay few. `export_snapshot`
copies every warehouse table, inside ONE read transaction (so the snapshot is consistent),
to `<root>/snapshots/<snapshot_id>/<table>/`, hive-partitioned by the column readers filter
on (samples by batch, annotation tables by project, dataset tables by dataset id), then writes
the snapshot's `manifest.json` and finally moves `<root>/LATEST` to it (an atomic rename): a
reader never sees a half-written snapshot, and old snapshots stay readable for reproducible
dataset builds. `LakeWarehouse` reads a snapshot with the `Warehouse` read API (`read()`,
`query`, `query_dicts`, `counts`, `schema_version`), so code written against that API (the
curation aggregation, the dataset checks) runs on it unchanged; writes are refused.

`root` is a local directory; on a cluster it is a shared mount of the object store bucket
(s3fs, gcsfuse, a CSI volume). Reading straight from `s3://` needs DuckDB's httpfs extension,
which this machine cannot download; see docs/deployment.md.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb

from warehouse.db import ReadAPI, Warehouse, WarehouseError

# Partition columns per table (others: one folder of files). Readers prune by these.
PARTITIONS: dict[str, list[str]] = {
    "samples": ["batch_id"],
    "quarantine": ["batch_id"],
    "tasks": ["project_key"],
    "annotation_versions": ["project_key"],
    "annotations": ["project_key"],
    "annotation_regions": ["project_key"],
    "dataset_rows": ["dataset_id"],
    "dataset_regions": ["dataset_id"],
    "dataset_exclusions": ["dataset_id"],
}
MANIFEST = "manifest.json"
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Snapshot:
    snapshot_id: str
    path: Path
    schema_version: int
    created_at: str
    tables: dict[str, dict]      # name -> {"rows", "partition_by", "columns": [[name, type], ...]}

    @property
    def rows(self) -> dict[str, int]:
        return {t: int(m["rows"]) for t, m in self.tables.items()}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_snapshot(wh: Warehouse, root: str | os.PathLike, snapshot_id: str | None = None,
                    partitions: dict[str, list[str]] | None = None) -> Snapshot:
    """Write every table of `wh` as parquet under `<root>/snapshots/<snapshot_id>/` and point
    `<root>/LATEST` at it. `snapshot_id` defaults to the UTC time. Raises WarehouseError if the
    snapshot exists (snapshots are immutable)."""
    parts = PARTITIONS if partitions is None else partitions
    root = Path(root)
    sid = snapshot_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    if not _ID_RE.match(sid):
        raise WarehouseError(f"snapshot id {sid!r}: use letters, digits, '.', '_' and '-' only")
    final = root / "snapshots" / sid
    if final.exists():
        raise WarehouseError(f"snapshot {final} already exists; snapshots are immutable, pick another id")
    tmp = root / "snapshots" / f".{sid}.partial"
    shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a crashed export
    tmp.mkdir(parents=True)
    tables: dict[str, dict] = {}
    try:
        with wh.read() as con:  # the warehouse lock keeps writers out: a consistent cut
            version = int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])
            names = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                "AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]
            for t in names:
                cols = [[c, ty] for c, ty in con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'main' "
                    "AND table_name = ? ORDER BY ordinal_position", [t]).fetchall()]
                n = int(con.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()[0])
                by = [c for c in parts.get(t, []) if c in {c for c, _ in cols}] if n else []
                out = tmp / t
                out.mkdir()
                if by:
                    opts = f"FORMAT parquet, PARTITION_BY ({', '.join(map(_quote, by))})"
                    con.execute(f"COPY (SELECT * FROM {_quote(t)}) TO {_lit(out)} ({opts})")
                else:  # an empty table still needs a file that carries its schema
                    con.execute(f"COPY (SELECT * FROM {_quote(t)}) TO {_lit(out / 'data_0.parquet')} (FORMAT parquet)")
                tables[t] = {"rows": n, "partition_by": by, "columns": cols}
        created = dt.datetime.now(dt.timezone.utc).isoformat()
        (tmp / MANIFEST).write_text(json.dumps(
            {"snapshot_id": sid, "schema_version": version, "created_at": created, "tables": tables}, indent=1))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = root / ".LATEST.tmp"
    latest_tmp.write_text(sid + "\n")
    os.replace(latest_tmp, root / "LATEST")
    return Snapshot(sid, final, version, created, tables)


def list_snapshots(root: str | os.PathLike) -> list[str]:
    """Complete snapshots under `root`, oldest first."""
    base = Path(root) / "snapshots"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))


class LakeWarehouse(ReadAPI):
    """A read-only warehouse over one snapshot; the `Warehouse` read API."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    @classmethod
    def open(cls, root: str | os.PathLike, snapshot_id: str | None = None) -> "LakeWarehouse":
        """The snapshot `snapshot_id`, or the one `<root>/LATEST` names."""
        root = Path(root)
        if snapshot_id is None:
            latest = root / "LATEST"
            if not latest.is_file():
                raise WarehouseError(f"{root}: no snapshot yet (no LATEST file); run `sfr snapshot {root}` first")
            snapshot_id = latest.read_text().strip()
        path = root / "snapshots" / snapshot_id
        try:
            m = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            have = ", ".join(list_snapshots(root)) or "none"
            raise WarehouseError(f"{path}: not a complete snapshot (no {MANIFEST}); snapshots here: {have}") from None
        return cls(Snapshot(m["snapshot_id"], path, int(m["schema_version"]), m["created_at"], m["tables"]))

    def _views(self, con: duckdb.DuckDBPyConnection) -> None:
        for t, meta in self.snapshot.tables.items():
            folder = self.snapshot.path / t
            glob = str(folder / "**" / "*.parquet") if meta["partition_by"] else str(folder / "*.parquet")
            hive = "true" if meta["partition_by"] else "false"
            # Partition columns come back as text at the end: restore each column's type and order.
            cols = ", ".join(f"CAST({_quote(c)} AS {ty}) AS {_quote(c)}" for c, ty in meta["columns"])
            con.execute(f"CREATE VIEW {_quote(t)} AS SELECT {cols} FROM read_parquet({_lit(glob)}, "
                        f"hive_partitioning = {hive}, hive_types_autocast = false)")

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB connection with one view per table (temp tables allowed)."""
        con = duckdb.connect()
        try:
            self._views(con)
            yield con
        finally:
            con.close()

    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        raise WarehouseError(f"snapshot {self.snapshot.snapshot_id} is read-only; write to the DuckDB warehouse "
                             "and export a new snapshot")

    def schema_version(self) -> int:
        return self.snapshot.schema_version
