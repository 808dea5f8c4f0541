"""Crashes around the warehouse (issue 9): a writer killed mid-transaction, a file copied while
a transaction is open, an ingestion run killed mid-batch and re-run."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.core import make_samples
from warehouse.db import Warehouse

WRITER = r"""
import sys, time
from warehouse.db import Warehouse
wh = Warehouse.open(sys.argv[1])
rows, pause_at = int(sys.argv[2]), int(sys.argv[3])
for t in range(10_000):
    with wh.write() as con:
        con.execute("INSERT INTO groups (group_id, source_sha256, instruction) SELECT 't' || ? || '-' || i, 'x', 'y' FROM range(?) r(i)", [t, rows])
        if t == pause_at:
            print("in-transaction", flush=True)
            time.sleep(3600)   # the test stops or kills us here, before COMMIT
    print(f"committed {t}", flush=True)
"""


def _writer(path, rows=50, pause_at=-1):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(rows), str(pause_at)],
                            stdout=subprocess.PIPE, text=True)


def _wait_for(proc, text, timeout=120):
    # readline blocks; a dead writer returns "" forever, so check it is alive

    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"writer exited with {proc.returncode} before printing {text!r}")
        if text in line:
            return line
    raise AssertionError(f"writer never printed {text!r} (last line {line!r})")


@pytest.mark.parametrize("kill_after", [1, 3, 7, 12, 20])
def test_writer_killed_at_random_points_leaves_only_whole_transactions(workspace, kill_after):
    Warehouse.open(workspace)
    proc = _writer(workspace.warehouse_path, rows=50)
    _wait_for(proc, f"committed {kill_after - 1}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    n = Warehouse.open(workspace).query("SELECT count(*) FROM groups")[0][0]
    assert n % 50 == 0 and n >= 50 * kill_after  # whole transactions only, none lost once committed


def test_file_copied_during_an_open_transaction(workspace, tmp_path):
    Warehouse.open(workspace)
    proc = _writer(workspace.warehouse_path, rows=40, pause_at=5)
    _wait_for(proc, "in-transaction")
    proc.send_signal(signal.SIGSTOP)  # freeze mid-transaction: the copy is a crash snapshot
    try:
        copy = tmp_path / "copy"
        copy.mkdir()
        for f in workspace.home.glob("warehouse.duckdb*"):
            if not f.name.endswith(".lock"):
                shutil.copy2(f, copy / f.name)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    wh = Warehouse.open(copy / "warehouse.duckdb")
    # Transactions 0..4 committed (40 rows each); the open one (5) is not visible.
    assert wh.query("SELECT count(*) FROM groups") == [(200,)]
    assert wh.query("SELECT count(*) FROM groups WHERE group_id LIKE 't5-%'") == [(0,)]


def test_ingestion_killed_mid_batch_then_rerun(workspace, tmp_path):
    manifest = make_samples(tmp_path / "in", names=("astronaut", "chelsea", "coffee", "rocket"), rollouts=8, size=160)
    env = {**os.environ, "SFR_HOME": str(workspace.home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c",
           "import sys; from warehouse.ingest import ingest_path, IngestConfig; from warehouse.workspace import Workspace;"
           "ingest_path(Workspace.open(), sys.argv[1], IngestConfig(chunk_size=4), "
           "progress=lambda n: print('chunk', flush=True))", str(manifest)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    for _ in range(3):
        assert proc.stdout.readline().startswith("chunk")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    wh = Warehouse.open(workspace)
    partial = wh.query("SELECT count(*) FROM samples")[0][0]
    assert 12 <= partial < 32 and partial % 4 == 0  # whole chunks only
    from warehouse.ingest import ingest_path

    rerun = ingest_path(workspace, manifest)
    assert rerun.duplicates == partial and rerun.ingested == 32 - partial
    assert wh.query("SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(32, 32)]
