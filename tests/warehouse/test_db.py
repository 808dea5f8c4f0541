import subprocess
import sys

import duckdb
import pytest

from warehouse.db import Warehouse, WarehouseError, latest_version, migrations


def test_fresh_open_applies_all_migrations(workspace):
    wh = Warehouse.open(workspace)
    assert wh.schema_version() == latest_version()
    versions = [r[0] for r in wh.query("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [v for v, _, _ in migrations()]
    assert {"images", "samples", "groups", "quarantine", "batches"} <= set(wh.counts())


def test_upgrade_from_version_1_keeps_rows(workspace):
    # Build a warehouse the way the first release left it: only migration 001 applied.
    v1 = migrations()[0]
    con = duckdb.connect(str(workspace.warehouse_path))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TIMESTAMP DEFAULT current_timestamp)")
    con.execute(v1[2])
    con.execute("INSERT INTO schema_version (version, name) VALUES (1, ?)", [v1[1]])
    con.execute("INSERT INTO groups (group_id, source_sha256, instruction) VALUES ('g1', 'abc', 'do it')")
    con.execute("INSERT INTO samples (sample_id, batch_id, group_id, source_sha256, edited_sha256, instruction) "
                "VALUES ('s1', 'b1', 'g1', 'abc', 'def', 'do it')")
    con.close()
    wh = Warehouse.open(workspace)
    assert wh.schema_version() == latest_version() > 1
    assert wh.query("SELECT sample_id, group_id FROM samples") == [("s1", "g1")]
    assert wh.query("SELECT count(*) FROM region_sets") == [(0,)]


def test_newer_schema_is_refused(workspace):
    wh = Warehouse.open(workspace)
    with wh.write() as con:
        con.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    with pytest.raises(WarehouseError, match="newer than this code"):
        Warehouse.open(workspace)


def test_failed_transaction_rolls_back(workspace):
    wh = Warehouse.open(workspace)
    with pytest.raises(RuntimeError):
        with wh.write() as con:
            con.execute("INSERT INTO groups (group_id, source_sha256, instruction) VALUES ('g1', 'a', 'b')")
            raise RuntimeError("crash in the middle of a batch")
    assert wh.query("SELECT count(*) FROM groups") == [(0,)]


WRITER = """
import sys
from warehouse.db import Warehouse
wh = Warehouse.open(sys.argv[1])
for i in range(int(sys.argv[3])):
    with wh.write() as con:
        con.execute("INSERT INTO groups (group_id, source_sha256, instruction) VALUES (?, 'x', 'y')",
                    [f"{sys.argv[2]}-{i}"])
"""


def test_concurrent_writer_processes_lose_nothing(workspace):
    Warehouse.open(workspace)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(workspace.warehouse_path), f"p{k}", "40"],
                              stderr=subprocess.PIPE, text=True) for k in range(4)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errs
    wh = Warehouse.open(workspace)
    assert wh.query("SELECT count(*) FROM groups") == [(160,)]


def test_insert_rows_is_one_bulk_insert_with_an_optional_conflict_clause(tmp_path):
    from warehouse.db import Warehouse, insert_rows
    from warehouse.workspace import Workspace

    wh = Warehouse.open(Workspace.open(tmp_path / "home"))
    with wh.write() as con:
        insert_rows(con, "annotators", ["annotator_id", "email", "is_simulated"], [])   # nothing to do
        insert_rows(con, "annotators", ["annotator_id", "email", "is_simulated"],
                    [("a1", "a1@example.org", False), ("a2", None, True)])
        insert_rows(con, "annotators", ["annotator_id", "email", "is_simulated"],
                    [("a1", "changed@example.org", True), ("a3", "a3@example.org", False)], "ON CONFLICT DO NOTHING")
    assert wh.query("SELECT annotator_id, email, is_simulated FROM annotators ORDER BY 1") == [
        ("a1", "a1@example.org", False), ("a2", None, True), ("a3", "a3@example.org", False)]
    with pytest.raises(Exception, match="(?i)constraint|duplicate"), wh.write() as con:
        insert_rows(con, "annotators", ["annotator_id", "email", "is_simulated"], [("a2", None, False)])
