"""The production Dagster instance (deploy/dagster.postgres.yaml) on a real PostgreSQL server:
runs, event logs and pool slots in PostgreSQL, the asset graph materialized by `dagster asset
materialize` with the multiprocess executor (ingest + region proposals of one batch: a process per
step) and in-process (curation, the dataset export and a short training: the multiprocess
executor would start a process that loads the whole code location per step, ~1 min each on a
busy 2-core machine). Annotation needs a Label Studio and runs on PostgreSQL in
tests/annotation/test_postgres.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from pipelines.defs import curation, training
from pipelines.resources import WorkspaceResource
from tests.fixtures.core import make_samples
from warehouse.db import Warehouse
from warehouse.ingest import register_batch
from warehouse.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
FAST_TRAIN = ["max_steps=4", "batch_size=6", "num_threads=1", "eval_split=", "warmup_steps=1"]


def _instance_env(pg_cluster, dagster_home: Path) -> dict[str, str]:
    db = pg_cluster.new_database("dagster")
    info = pg_cluster.conninfo(db)
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", dagster_home / "dagster.yaml")
    return {"DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": info["host"], "DAGSTER_PG_PORT": str(info["port"]),
            "DAGSTER_PG_USER": info["user"], "DAGSTER_PG_PASSWORD": info["password"], "DAGSTER_PG_DB": db}


def _materialize(env: dict, home: Path, select: str, run_config: dict, partition: str | None = None) -> str:
    cfg = home / f"run-{abs(hash(select))}.yaml"
    base = yaml.safe_load((REPO / "deploy" / "run_config.multiprocess.yaml").read_text())
    cfg.write_text(yaml.safe_dump({**base, **run_config}))
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines", "--select", select, "-c", str(cfg)]
    if partition:
        cmd += ["--partition", partition]
    p = subprocess.run(cmd, env={**os.environ, **env, "SFR_HOME": str(home)}, capture_output=True, text=True,
                       timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert env["DAGSTER_PG_PASSWORD"] not in out
    return out


@pytest.mark.slow
def test_asset_graph_on_the_postgres_instance(pg_cluster, curation_ws, annotated_warehouse, hf_cache, tmp_path,
                                              monkeypatch):
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    env = _instance_env(pg_cluster, dagster_home)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    instance.event_log_storage.set_concurrency_slots("warehouse", 1)  # as docs/deployment.md says
    instance.event_log_storage.set_concurrency_slots("gpu", 1)

    # ingest + regions on a fresh workspace's batch partition
    ingest_ws = Workspace.open(tmp_path / "ingest-home")
    batch = register_batch(ingest_ws, make_samples(tmp_path / "incoming", names=("astronaut", "coffee"), rollouts=2,
                                                   size=64))
    instance.add_dynamic_partitions("batches", [batch])
    out = _materialize(env, ingest_ws.home, "editing_samples,region_proposals", {}, partition=batch)
    assert "multiprocess executor" in out and "RUN_SUCCESS" in out
    assert Warehouse.open(ingest_ws).query("SELECT count(*), count(DISTINCT group_id) FROM samples") == [(4, 2)]
    assert Warehouse.open(ingest_ws).query("SELECT count(*) FROM region_sets") == [(2,)]

    # curation -> dataset export -> training, on an annotated warehouse, recorded in the same instance
    run_config = {"ops": {"dataset_version": {"config": {"overrides_json": json.dumps({"fractions": [0.5, 0.25, 0.25]})}},
                          "sfreward_model": {"config": {"overrides": FAST_TRAIN}}}}
    res = dg.materialize([curation.aggregated_labels, curation.agreement_report, curation.dataset_version,
                          curation.dataset_export_hf, training.sfreward_model], instance=instance,
                         resources={"workspace": WorkspaceResource(home=str(curation_ws.home))}, run_config=run_config)
    assert res.success
    assert Warehouse.open(curation_ws).query("SELECT count(*) FROM models") == [(1,)]

    # everything Dagster knows is in PostgreSQL: two successful runs, one materialization per asset
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    runs = instance.get_runs()
    assert sorted(r.status.value for r in runs) == ["SUCCESS", "SUCCESS"]
    for key in ("editing_samples", "region_proposals", "aggregated_labels", "agreement_report", "dataset_version",
                "dataset_export_hf", "sfreward_model"):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
    assert {"warehouse", "gpu"} <= set(instance.event_log_storage.get_concurrency_keys())
    info = pg_cluster.conninfo(env["DAGSTER_PG_DB"])
    with psycopg.connect(**info) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        assert con.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
                           ).fetchone()[0] >= 7
        # pool slots were claimed and all given back
        assert con.execute("SELECT count(*) FROM concurrency_slots WHERE run_id IS NOT NULL").fetchone()[0] == 0
