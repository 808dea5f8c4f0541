"""The annotation assets and sensor in Dagster, against a real Label Studio."""
from __future__ import annotations

import dagster as dg

from pipelines.defs.annotation import (annotation_tasks, changed_projects, defs, labelstudio_changes_sensor,
                                       synced_annotations)
from pipelines.resources import WorkspaceResource
from tests.fixtures.labelstudio import seed_warehouse
from warehouse.db import Warehouse

KEY = "dagster-proj"


def test_definitions_load():
    assert {a.key.to_user_string() for a in defs.assets} == {"annotation_tasks", "synced_annotations"}
    assert [s.name for s in defs.sensors] == ["labelstudio_changes_sensor"]


def test_push_sync_and_sensor(labelstudio, tmp_path):
    ws = labelstudio.workspace
    seeded = seed_warehouse(ws, tmp_path / "in", names=("chelsea",), rollouts=2)
    resources = {"workspace": WorkspaceResource(home=str(ws.home))}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [seeded["batch_id"]])
    res = dg.materialize([annotation_tasks], partition_key=seeded["batch_id"], instance=instance,
                         resources=resources,
                         run_config={"ops": {"annotation_tasks": {"config": {"project_key": KEY, "overlap": 2}}}})
    assert res.success
    md = res.asset_materializations_for_node("annotation_tasks")[0].metadata
    assert md["imported"].value == 2 and md["requested"].value == 2
    wh = Warehouse.open(ws)
    tasks = dict(wh.query("SELECT sample_id, ls_task_id FROM tasks WHERE project_key = ?", [KEY]))
    assert sorted(tasks) == seeded["sample_ids"]

    # Nothing annotated after a first sync: the sensor skips.
    assert dg.materialize([synced_annotations], instance=instance, resources=resources).success
    ctx = dg.build_sensor_context(instance=instance, resources=resources)
    assert isinstance(labelstudio_changes_sensor(ctx), dg.SkipReason)

    # An annotator submits: the sensor requests a sync of that project, once.
    ls = labelstudio.client()
    (pred,) = ls.predictions.list(task=tasks[seeded["sample_ids"][0]])
    result = pred.result + [{"id": "o", "from_name": "overall", "to_name": "edited", "type": "rating",
                             "value": {"rating": 3}}]
    ann = ls.annotations.create(id=tasks[seeded["sample_ids"][0]], result=result)
    assert KEY in changed_projects(ws, labelstudio.conn)
    ctx = dg.build_sensor_context(instance=instance, resources=resources)
    out = labelstudio_changes_sensor(ctx)
    assert isinstance(out, dg.SensorResult)
    (req,) = out.run_requests
    assert req.run_config["ops"]["synced_annotations"]["config"]["project_keys"] == [KEY]
    again = labelstudio_changes_sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                                               cursor=out.cursor))
    assert isinstance(again, dg.SkipReason)

    res = dg.materialize([synced_annotations], instance=instance, resources=resources, run_config=req.run_config)
    assert res.success
    rows = wh.query("SELECT ls_annotation_id, overall, valid FROM annotations WHERE project_key = ?", [KEY])
    assert rows == [(ann.id, 3, False)]  # region ratings missing: kept, marked invalid
    checks = res.get_asset_check_evaluations() if hasattr(res, "get_asset_check_evaluations") else []
    assert all(c.check_name == "annotations_mostly_valid" for c in checks)
