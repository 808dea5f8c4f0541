"""Beyond one process, tested here (issue 9): several batch partitions materialized at once by
separate Dagster runs on the multiprocess executor, writing one warehouse; and a 2-process
torchrun training launched from the Dagster training asset through Pipes."""
import os
import subprocess
import sys

import dagster as dg

from pipelines.defs import training
from pipelines.resources import WorkspaceResource
from sfreward import registry
from tests.fixtures.core import make_samples
from warehouse.db import Warehouse
from warehouse.ingest import register_batch


def test_three_partitions_at_once_on_the_multiprocess_executor(workspace, tmp_path):
    names = [("astronaut",), ("chelsea",), ("coffee",)]
    batches = [register_batch(workspace, make_samples(tmp_path / f"b{i}", names=n, rollouts=3, size=96))
               for i, n in enumerate(names)]
    env = {**os.environ, "SFR_HOME": str(workspace.home), "DAGSTER_HOME": str(workspace.dagster_home)}
    (workspace.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(workspace.dagster_home))
    instance.add_dynamic_partitions("batches", batches)
    # The CLI runs each partition as its own run with the job's default (multiprocess) executor.
    procs = [subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines",
                               "--select", "editing_samples,region_proposals", "--partition", b],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for b in batches]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[-2000:] for o in outs]
    assert all("multiprocess executor" in o and "RUN_SUCCESS" in o for o in outs)
    wh = Warehouse.open(workspace)
    assert wh.query("SELECT count(*), count(DISTINCT batch_id) FROM samples") == [(9, 3)]
    assert wh.query("SELECT count(*) FROM region_sets") == [(3,)]  # one per GRPO group


def test_torchrun_two_processes_from_the_training_asset(sfreward_workspace):
    ws = sfreward_workspace
    overrides = ["max_steps=4", "batch_size=3", "num_threads=1", "eval_split=", "warmup_steps=1"]
    res = dg.materialize(
        [training.sfreward_model], resources={"workspace": WorkspaceResource(home=str(ws.home))},
        run_config={"ops": {"sfreward_model": {"config": {"dataset_id": "ds-test", "overrides": overrides,
                                                           "nproc": 2}}}})
    assert res.success
    mat = res.asset_materializations_for_node("sfreward_model")[0]
    model_id = mat.metadata["model_id"].value
    rec = registry.get_model(ws, model_id)
    assert rec["dataset_id"] == "ds-test"
    assert mat.metadata["step"].value == 4
    # the launched trainer ran as 2 DDP processes (recorded by rank 0 in the model's metrics)
    assert int(rec["metrics"].get("world_size", 0)) == 2
