"""A Dagster run killed (SIGKILL of the whole run process group) in the middle of materializing
a batch, then the same materialization run again (issue 9): no partial chunk is visible, and
after the rerun every sample is there exactly once."""
import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg

from tests.fixtures.core import make_samples
from warehouse.db import Warehouse
from warehouse.ingest import register_batch

CHUNK = 4


def _materialize_cmd(batch_id):
    config = {"ops": {"editing_samples": {"config": {"chunk_size": CHUNK}}}}
    return [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines", "--select",
            "editing_samples", "--partition", batch_id, "--config-json", json.dumps(config)]


def test_run_killed_mid_materialization_then_rerun(workspace, tmp_path):
    manifest = make_samples(tmp_path / "in", names=("astronaut", "chelsea", "coffee", "rocket"), rollouts=16,
                            size=384)
    batch_id = register_batch(workspace, manifest)
    (workspace.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dg.DagsterInstance.from_config(str(workspace.dagster_home)).add_dynamic_partitions("batches", [batch_id])
    env = {**os.environ, "SFR_HOME": str(workspace.home), "DAGSTER_HOME": str(workspace.dagster_home)}
    proc = subprocess.Popen(_materialize_cmd(batch_id), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wh = Warehouse.open(workspace)
    deadline = time.monotonic() + 600
    n = 0
    while time.monotonic() < deadline:
        n = wh.query("SELECT count(*) FROM samples")[0][0]
        if n >= CHUNK or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its step subprocesses
    proc.wait(timeout=60)
    print("samples before kill", n)
    partial = wh.query("SELECT count(*) FROM samples")[0][0]
    # whole transactions only: a multiple of the chunk, and the run did not get to finish
    assert 0 < partial < 64 and partial % CHUNK == 0, f"{partial} samples visible after the kill"
    rerun = subprocess.run(_materialize_cmd(batch_id), env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert wh.query("SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(64, 64)]
    assert wh.query("SELECT n_ingested, n_quarantined FROM batches WHERE batch_id = ?", [batch_id]) == [(64, 0)]
