"""The DuckDB warehouse: numbered migrations applied on open, and short transactions under a
process-wide file lock.

DuckDB lets only one process open a database file for writing at a time (and a read-only
opener cannot coexist with a writer). Dagster steps, the CLI and the reward server may all run
at once, so every access here takes an exclusive `fcntl` lock on `<file>.lock`, opens the file,
runs one transaction, and closes it again. Waiting writers retry with backoff up to
`lock_timeout_s`; nothing is written outside a transaction, so a crash never leaves a partial
batch visible.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import duckdb

from warehouse.workspace import Workspace

_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_thread_locks: dict[str, threading.RLock] = {}
_thread_locks_guard = threading.Lock()


class WarehouseError(RuntimeError):
    pass


class WarehouseBusy(WarehouseError):
    pass


class WarehouseCorrupt(WarehouseError):
    """The DuckDB file is damaged (truncated, bad block checksum): one line saying what to do."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem.strip().splitlines()[0] if problem.strip() else "damaged"
        super().__init__(f"the warehouse {path} is damaged ({self.problem}); nothing was changed. Restore the "
                         "last snapshot with `sfr restore ROOT` (snapshots are made by `sfr snapshot ROOT`), "
                         "or copy back a backup of the file")


# DuckDB's words for a damaged database file. A short read counts only when it names the
# warehouse file itself (a bad parquet or CSV read through the same connection is not damage).
_CORRUPT_MARKERS = ("corrupt database file", "does not match stored checksum", "not a valid duckdb database")


def looks_corrupt(e: BaseException, path: Path) -> bool:
    if not isinstance(e, duckdb.Error):
        return False
    msg = str(e).lower()
    return (any(m in msg for m in _CORRUPT_MARKERS)
            or ("could not read enough bytes" in msg and path.name.lower() in msg))


def migrations() -> list[tuple[int, str, str]]:
    """All packaged migrations as (version, name, sql), in order."""
    out = []
    for entry in resources.files("warehouse.migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise WarehouseError(f"duplicate migration numbers: {versions}")
    return out


def latest_version() -> int:
    return migrations()[-1][0]


class ReadAPI:
    """Convenience reads over `self.read()`; shared by `Warehouse` and `warehouse.lake.LakeWarehouse`."""

    def read(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        raise NotImplementedError

    def query(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        with self.read() as con:
            return con.execute(sql, params or []).fetchall()

    def query_dicts(self, sql: str, params: list | tuple | None = None) -> list[dict]:
        with self.read() as con:
            cur = con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    def counts(self) -> dict[str, int]:
        """Row counts of every table (or view), for `sfr status`."""
        with self.read() as con:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                "ORDER BY table_name").fetchall()]
            return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}


@dataclass
class Warehouse(ReadAPI):
    path: Path
    lock_timeout_s: float = 120.0

    @classmethod
    def open(cls, where: Workspace | str | os.PathLike, migrate: bool = True,
             lock_timeout_s: float = 120.0) -> "Warehouse":
        path = where.warehouse_path if isinstance(where, Workspace) else Path(where)
        wh = cls(Path(path), lock_timeout_s=lock_timeout_s)
        if migrate:
            wh.migrate()
        return wh

    # -- locking -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        key = str(self.path.resolve())
        with _thread_locks_guard:
            tlock = _thread_locks.setdefault(key, threading.RLock())
        deadline = time.monotonic() + self.lock_timeout_s
        if not tlock.acquire(timeout=self.lock_timeout_s):
            raise WarehouseBusy(f"warehouse {self.path} is busy (thread lock); try again")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                delay = 0.005
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise WarehouseBusy(
                                f"warehouse {self.path} stayed locked for {self.lock_timeout_s:.0f} s "
                                "by another process; is a long job running? Try again when it ends."
                            ) from None
                        time.sleep(delay)
                        # a short cap: a writer looping over chunks releases the lock only between chunks,
                        # and a waiter that sleeps long misses those windows and starves.
                        delay = min(delay * 2, 0.02)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            tlock.release()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        # DuckDB's own lock can still be held for a moment by a process that just closed;
        # retry briefly rather than surfacing "Could not set lock on file".
        for attempt in range(50):
            try:
                return duckdb.connect(str(self.path))
            except duckdb.Error as e:
                if looks_corrupt(e, self.path):
                    raise WarehouseCorrupt(self.path, str(e)) from e
                if not isinstance(e, duckdb.IOException) or "lock" not in str(e).lower() or attempt == 49:
                    raise WarehouseError(f"cannot open warehouse {self.path}: {e}") from e
                time.sleep(0.05)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction: committed when the block exits normally, rolled back otherwise."""
        with self._locked():
            con = self._connect()
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                except BaseException as e:
                    con.execute("ROLLBACK")
                    if looks_corrupt(e, self.path):
                        raise WarehouseCorrupt(self.path, str(e)) from e
                    raise
                con.execute("COMMIT")
            finally:
                con.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for reads (same lock: DuckDB cannot read while another process writes)."""
        with self._locked():
            con = self._connect()
            try:
                yield con
            except duckdb.Error as e:
                if looks_corrupt(e, self.path):
                    raise WarehouseCorrupt(self.path, str(e)) from e
                raise
            finally:
                con.close()

    # -- migrations --------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.read() as con:
            return _current_version(con)

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction. Returns the versions applied."""
        applied = []
        with self._locked():
            con = self._connect()
            try:
                _check_size(con, self.path)
                con.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TIMESTAMP DEFAULT current_timestamp)"
                )
                current = _current_version(con)
                known = migrations()
                if current > known[-1][0]:
                    raise WarehouseError(
                        f"warehouse {self.path} is at schema version {current}, newer than this "
                        f"code knows ({known[-1][0]}); upgrade the sfreward-platform package"
                    )
                for version, name, sql in known:
                    if version <= current:
                        continue
                    con.execute("BEGIN TRANSACTION")
                    try:
                        con.execute(sql)
                        con.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name])
                        con.execute("COMMIT")
                    except Exception as e:
                        con.execute("ROLLBACK")
                        raise WarehouseError(f"migration {version:03d}_{name} failed: {e}") from e
                    applied.append(version)
            except duckdb.Error as e:
                if looks_corrupt(e, self.path):
                    raise WarehouseCorrupt(self.path, str(e)) from e
                raise
            finally:
                con.close()
        return applied

    # -- integrity ---------------------------------------------------------------------
    def quick_check(self) -> dict:
        """Cheap (no table data read): the file is as long as its block count says. A truncated
        file fails this; run on every open (migrate). Returns {"ok": True, "bytes", "blocks"}."""
        with self.read() as con:
            return _check_size(con, self.path)

    def full_check(self) -> dict[str, str]:
        """Read every column of every row of every table (block checksums are verified on read).
        Returns {table: first line of the error} for the tables that fail; {} when all pass."""
        failed: dict[str, str] = {}
        with self._locked():
            con = self._connect()
            try:
                tables = [r[0] for r in con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                    "AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]
                for t in tables:
                    try:
                        con.execute(f'SELECT sum(hash("{t}")) FROM "{t}"').fetchall()
                    except duckdb.Error as e:
                        failed[t] = str(e).strip().splitlines()[0]
            finally:
                con.close()
        return failed


# DuckDB's file: three 4 KiB headers, then blocks of `block_size` bytes.
_FILE_HEADERS = 3 * 4096


def _check_size(con: duckdb.DuckDBPyConnection, path: Path) -> dict:
    """The highest block the catalog and the tables point at lies inside the file. Reads only
    metadata: when the file holds all `total_blocks`, one pragma; otherwise (DuckDB may cut free
    blocks off the end, or the file was truncated) the storage info of each table, not its data."""
    row = con.execute("PRAGMA database_size").fetchone()
    block_size, total_blocks = int(row[2]), int(row[3])
    actual = path.stat().st_size if path.exists() else 0
    if actual >= _FILE_HEADERS + block_size * total_blocks:
        return {"ok": True, "bytes": actual, "highest_block": total_blocks - 1}  # the usual case: one pragma
    top = con.execute("SELECT max(block_id) FROM pragma_metadata_info()").fetchone()[0]
    top = -1 if top is None else int(top)
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog = current_database() AND table_type = 'BASE TABLE'").fetchall()]
    for t in tables:
        row = con.execute("SELECT max(greatest(block_id, coalesce(list_max(additional_block_ids), -1))) "
                          "FROM pragma_storage_info(?) WHERE persistent", [t]).fetchone()
        if row[0] is not None:
            top = max(top, int(row[0]))
    expected = _FILE_HEADERS + block_size * (top + 1) if top >= 0 else 0
    if actual < expected:
        raise WarehouseCorrupt(path, f"the file is {actual} bytes but its data reaches block {top}, "
                                     f"{expected} bytes: truncated")
    return {"ok": True, "bytes": actual, "highest_block": top}


def _current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if not exists:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], rows: list[tuple],
                on_conflict: str = "") -> None:
    """The platform's one bulk insert: rows (tuples in `columns` order) go in through an Arrow
    table in one statement; DuckDB's executemany costs milliseconds per row. `on_conflict` is an
    SQL tail such as "ON CONFLICT DO NOTHING". Runs inside the caller's transaction."""
    if not rows:
        return
    import pyarrow as pa

    data = pa.Table.from_pydict({c: [r[i] for r in rows] for i, c in enumerate(columns)})
    name = f"_rows_{table}"
    con.register(name, data)
    try:
        cols = ", ".join(columns)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name} {on_conflict}")
    finally:   # after a failed INSERT the transaction is aborted and unregister would raise,
        with contextlib.suppress(duckdb.Error):   # hiding the real error (the connection closes anyway)
            con.unregister(name)
