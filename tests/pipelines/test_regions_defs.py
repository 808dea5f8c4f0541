"""The region_proposals asset materialized by Dagster on a batch partition."""
import dagster as dg

from pipelines.defs.regions import GPU_POOL, region_proposals
from pipelines.resources import WorkspaceResource
from warehouse.db import Warehouse


def _materialize(ws, run_config=None):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", ["b1"])
    return dg.materialize([region_proposals], partition_key="b1", instance=instance,
                          resources={"workspace": WorkspaceResource(home=str(ws.home))},
                          run_config=run_config)


def test_asset_shape():
    spec = region_proposals.specs_by_key[region_proposals.key]
    assert region_proposals.partitions_def.name == "batches"
    assert dg.AssetKey("editing_samples") in {d.asset_key for d in spec.deps}
    assert region_proposals.op.pool == GPU_POOL
    assert spec.group_name == "regions" and spec.code_version


def test_materialize_classical_then_rerun_is_noop(regions_batch, monkeypatch):
    monkeypatch.delenv("SFR_SAM_CHECKPOINT", raising=False)
    ws = regions_batch["ws"]
    res = _materialize(ws)
    assert res.success
    md = res.asset_materializations_for_node("region_proposals")[0].metadata
    assert md["proposer"].value == "classical" and md["proposed"].value == 2 and md["failed"].value == 0
    assert Warehouse.open(ws).query("SELECT count(*) FROM region_sets") == [(2,)]
    md2 = _materialize(ws).asset_materializations_for_node("region_proposals")[0].metadata
    assert (md2["proposed"].value, md2["existing"].value) == (0, 2)


def test_materialize_with_sam_from_run_config(regions_batch, tiny_sam_checkpoint):
    ws = regions_batch["ws"]
    cfg = {"ops": {"region_proposals": {"config": {
        "model_type": "tiny", "checkpoint": str(tiny_sam_checkpoint), "points_per_side": 2, "device": "cpu"}}}}
    res = _materialize(ws, cfg)
    md = res.asset_materializations_for_node("region_proposals")[0].metadata
    assert md["proposer"].value == "sam:tiny" and md["proposed"].value == 2
