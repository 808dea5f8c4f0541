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
import pytest

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


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_run_killed_on_the_postgres_instance_then_rerun(pg_cluster, workspace, tmp_path, monkeypatch):
    """The same on the production instance (deploy/dagster.postgres.yaml, runs and events in
    PostgreSQL) with a batch 1.5x as large: the killed run never reads as a success, and the
    rerun completes the batch with every sample exactly once."""
    from tests.deploy.test_dagster_postgres import _instance_env

    manifest = make_samples(tmp_path / "in", names=("astronaut", "chelsea", "coffee", "rocket"), rollouts=24,
                            size=256)
    batch_id = register_batch(workspace, manifest)
    pg_env = _instance_env(pg_cluster, workspace.dagster_home)
    for k, v in pg_env.items():
        monkeypatch.setenv(k, v)
    instance = dg.DagsterInstance.from_config(str(workspace.dagster_home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    instance.add_dynamic_partitions("batches", [batch_id])
    env = {**os.environ, "SFR_HOME": str(workspace.home)}
    proc = subprocess.Popen(_materialize_cmd(batch_id), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wh = Warehouse.open(workspace)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if wh.query("SELECT count(*) FROM samples")[0][0] >= CHUNK or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    partial = wh.query("SELECT count(*) FROM samples")[0][0]
    assert 0 < partial < 96 and partial % CHUNK == 0, f"{partial} samples visible after the kill"
    [killed] = instance.get_runs()
    assert killed.status == dg.DagsterRunStatus.STARTED  # killed: never a success
    # The dead run still holds its `warehouse` pool slot in PostgreSQL: a rerun would wait for it
    # forever. What the daemon's run monitoring does (deploy/dagster.postgres.yaml): mark the run
    # whose worker is gone as failed, then free the slots of finished runs.
    held = instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots
    assert [s.run_id for s in held] == [killed.run_id]
    instance.report_run_failed(killed)
    instance.event_log_storage.free_concurrency_slots_for_run(killed.run_id)
    assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []
    rerun = subprocess.run(_materialize_cmd(batch_id), env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert pg_env["DAGSTER_PG_PASSWORD"] not in rerun.stdout + rerun.stderr
    assert wh.query("SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(96, 96)]
    assert wh.query("SELECT n_ingested, n_quarantined FROM batches WHERE batch_id = ?", [batch_id]) == [(96, 0)]
    statuses = sorted(r.status.value for r in instance.get_runs())
    assert statuses == ["FAILURE", "SUCCESS"]
