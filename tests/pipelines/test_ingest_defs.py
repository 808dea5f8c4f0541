"""The ingest domain of the Dagster code location, materialized by Dagster."""
import shutil

import numpy as np

import dagster as dg

from pipelines.defs.ingest import editing_samples, incoming_batches_sensor
from pipelines.resources import WorkspaceResource
from tests.fixtures.core import make_samples
from warehouse.db import Warehouse
from warehouse.ingest import register_batch


def test_code_location_loads():
    from pipelines import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "editing_samples" in keys


def test_materialize_a_batch_partition(workspace, sample_manifest):
    batch_id = register_batch(workspace, sample_manifest)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [batch_id])
    res = dg.materialize([editing_samples], partition_key=batch_id, instance=instance,
                         resources={"workspace": WorkspaceResource(home=str(workspace.home))})
    assert res.success
    mat = res.asset_materializations_for_node("editing_samples")[0]
    assert mat.metadata["ingested"].value == 4
    assert Warehouse.open(workspace).query("SELECT count(*) FROM samples WHERE batch_id = ?", [batch_id]) == [(4,)]


def test_sensor_registers_dropped_manifests(workspace, tmp_path):
    manifest = make_samples(tmp_path / "drop", names=("coffee",), rollouts=1)
    shutil.copytree(manifest.parent, workspace.incoming / "round1")
    shutil.move(str(workspace.incoming / "round1" / "manifest.jsonl"), workspace.incoming / "round1.jsonl")
    # Images are relative to the manifest: keep them beside it.
    for f in (workspace.incoming / "round1").iterdir():
        shutil.move(str(f), workspace.incoming / f.name)
    instance = dg.DagsterInstance.ephemeral()
    ctx = dg.build_sensor_context(instance=instance, cursor=None,
                                  resources={"workspace": WorkspaceResource(home=str(workspace.home))})
    result = incoming_batches_sensor(ctx)
    assert len(result.run_requests) == 1
    key = result.run_requests[0].partition_key
    assert result.dynamic_partitions_requests[0].partition_keys == [key]
    ctx2 = dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                   resources={"workspace": WorkspaceResource(home=str(workspace.home))})
    assert incoming_batches_sensor(ctx2).run_requests == []


def test_sensor_finds_manifest_folders_and_captured_batches(workspace, tmp_path):
    import json

    from pipelines.defs.ingest import discover_batches

    make_samples(workspace.incoming / "round2", names=("chelsea",), rollouts=1)
    make_samples(workspace.batches / "capture-20261127-1", names=("rocket",), rollouts=1)
    (workspace.incoming / "notes.txt").write_text("not a batch")
    ids = discover_batches(workspace)
    assert len(ids) == 2
    sources = {r[0] for r in Warehouse.open(workspace).query("SELECT source_uri FROM batches")}
    assert any("round2" in s for s in sources) and any("capture-" in s for s in sources)
    assert discover_batches(workspace) == ids  # idempotent
    json.dumps(ids)


def _magicbrush(folder):
    """A MagicBrush-schema save_to_disk folder from real photos: 2 rows with mask images."""
    import datasets
    import numpy as np
    from PIL import Image

    from tests.fixtures.core import photo, recolor

    src = photo("coffee", 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 5:40] = 255
    feats = datasets.Features({"source_img": datasets.Image(), "target_img": datasets.Image(),
                               "mask_img": datasets.Image(), "instruction": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(
        {"source_img": [Image.fromarray(src)] * 2,
         "target_img": [Image.fromarray(recolor(src, (5, 10, 40, 30), c)) for c in (0, 1)],
         "mask_img": [Image.fromarray(mask)] * 2, "instruction": ["tint the cup", "tint the cup green"]},
        features=feats)
    ds.save_to_disk(folder)
    return mask > 0


def test_materialize_a_mapped_dataset_with_run_config(workspace, tmp_path):
    from warehouse import masks
    from warehouse.sources import SourceOptions

    truth = _magicbrush(tmp_path / "mb")
    # Registered by `sfr ingest --schema ...` elsewhere or by hand; the run config gives the mapping.
    batch_id = register_batch(workspace, tmp_path / "mb", options=SourceOptions("magicbrush"))
    with Warehouse.open(workspace).write() as con:   # forget the recorded mapping: the run config must do
        con.execute("UPDATE batches SET source_options = NULL")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [batch_id])
    res = dg.materialize([editing_samples], partition_key=batch_id, instance=instance,
                         resources={"workspace": WorkspaceResource(home=str(workspace.home))},
                         run_config={"ops": {"editing_samples": {"config": {
                             "source_schema": "source-edited",
                             "columns": {"source": "source_img", "edited": "target_img",
                                         "instruction": "instruction", "mask": "mask_img"}}}}})
    assert res.success
    assert res.asset_materializations_for_node("editing_samples")[0].metadata["ingested"].value == 2
    got = [masks.decode(r[0]) for r in Warehouse.open(workspace).query("SELECT rle FROM provided_masks")]
    assert len(got) == 2 and all(np.array_equal(m, truth) for m in got)


def test_sensor_registers_a_dropped_dataset_folder_with_its_mapping(workspace):
    import json

    from pipelines.defs.ingest import discover_batches
    from warehouse.ingest import ingest_batch

    _magicbrush(workspace.incoming / "mb")
    (workspace.incoming / "mb" / "sfr-columns.json").write_text(json.dumps({"schema": "magicbrush"}))
    (batch_id,) = discover_batches(workspace)
    assert ingest_batch(workspace, batch_id).ingested == 2
