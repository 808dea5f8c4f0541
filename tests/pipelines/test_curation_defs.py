"""The curation domain materialized by Dagster, checks included (blocking ones stop exports)."""
import dagster as dg

from pipelines.defs.curation import (agreement_above_floor, aggregated_labels, agreement_report, dataset_export_hf,
                                     dataset_export_reward_json, dataset_export_sft, dataset_version, defs,
                                     labels_complete, no_near_duplicate_sources, no_split_leakage,
                                     region_masks_decode)
from pipelines.resources import WorkspaceResource
from warehouse.db import Warehouse

ASSETS = [aggregated_labels, agreement_report, dataset_version, dataset_export_hf, dataset_export_reward_json,
          dataset_export_sft]
CHECKS = [no_split_leakage, no_near_duplicate_sources, labels_complete, region_masks_decode, agreement_above_floor]
RUN_CONFIG = {"ops": {"dataset_version": {"config": {"overrides_json": '{"fractions": [0.5, 0.25, 0.25]}'}}}}


def _checks(res) -> dict[str, bool]:
    return {e.check_name: e.passed for e in res.get_asset_check_evaluations()}


def test_defs_load():
    # The lead's code location provides the shared "workspace" resource.
    merged = dg.Definitions.merge(defs, dg.Definitions(resources={"workspace": WorkspaceResource()}))
    dg.Definitions.validate_loadable(merged)
    keys = {k.to_user_string() for k in merged.resolve_asset_graph().get_all_asset_keys()}
    assert {"aggregated_labels", "agreement_report", "dataset_version", "dataset_export_hf"} <= keys


def test_materialize_all_with_checks(curation_ws, annotated_warehouse, hf_cache):
    res = dg.materialize(ASSETS + CHECKS, resources={"workspace": WorkspaceResource(home=str(curation_ws.home))},
                         run_config=RUN_CONFIG, instance=dg.DagsterInstance.ephemeral())
    assert res.success
    assert _checks(res) == {"no_split_leakage": True, "no_near_duplicate_sources": True, "labels_complete": True,
                            "region_masks_decode": True, "agreement_above_floor": True}
    meta = res.asset_materializations_for_node("dataset_version")[0].metadata
    dataset_id = meta["dataset_id"].value
    assert meta["rows"].value == 24
    hf = res.asset_materializations_for_node("dataset_export_hf")[0].metadata
    assert hf["dataset_id"].value == dataset_id
    assert "train-00000-of-00001.parquet" in hf["files"].value and "README.md" in hf["files"].value
    formats = Warehouse.open(curation_ws).query("SELECT format FROM dataset_exports WHERE dataset_id = ? ORDER BY 1",
                                                [dataset_id])
    assert formats == [("hf",), ("reward_json",), ("sft",)]


def test_blocking_check_stops_exports(curation_ws, annotated_warehouse, hf_cache):
    # A corrupt proposal mask reaches the dataset; the mask check fails and blocks the exports.
    with Warehouse.open(curation_ws).write() as con:
        con.execute("UPDATE regions SET rle = '{\"size\": [64, 64], \"counts\": \"!!garbage\"}' "
                    "WHERE region_id = (SELECT min(region_id) FROM regions WHERE kind = 'edit')")
    res = dg.materialize(ASSETS + CHECKS, resources={"workspace": WorkspaceResource(home=str(curation_ws.home))},
                         run_config=RUN_CONFIG, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not res.success
    checks = _checks(res)
    assert checks["region_masks_decode"] is False and checks["no_split_leakage"] is True
    assert res.asset_materializations_for_node("dataset_version")
    assert not res.asset_materializations_for_node("dataset_export_hf")
    assert Warehouse.open(curation_ws).query("SELECT count(*) FROM dataset_exports") == [(0,)]


def test_planted_leak_fails_check(curation_ws, annotated_warehouse):
    instance = dg.DagsterInstance.ephemeral()
    resources = {"workspace": WorkspaceResource(home=str(curation_ws.home))}
    res = dg.materialize([aggregated_labels, agreement_report, dataset_version], resources=resources,
                         run_config=RUN_CONFIG, instance=instance)
    dataset_id = res.asset_materializations_for_node("dataset_version")[0].metadata["dataset_id"].value
    with Warehouse.open(curation_ws).write() as con:
        con.execute("UPDATE dataset_rows SET split = CASE split WHEN 'train' THEN 'test' ELSE 'train' END "
                    "WHERE dataset_id = ? AND sample_id = (SELECT min(sample_id) FROM dataset_rows WHERE dataset_id = ?)",
                    [dataset_id, dataset_id])
    res = dg.materialize([dataset_version, no_split_leakage], resources=resources, instance=instance,
                         selection=dg.AssetSelection.checks(no_split_leakage), raise_on_error=False)
    assert _checks(res) == {"no_split_leakage": False}


def test_a_later_run_exports_the_version_handed_along_the_graph(curation_ws, annotated_warehouse, hf_cache):
    """The dataset id is `dataset_version`'s output value, kept by the code location's io_manager
    in the workspace: a later run (another instance, like another run pod) exports that version,
    even when a newer version has been recorded since."""
    resources = {"workspace": WorkspaceResource(home=str(curation_ws.home)),
                 "io_manager": dg.FilesystemIOManager(base_dir=str(curation_ws.dagster_home / "storage"))}
    res = dg.materialize([aggregated_labels, agreement_report, dataset_version], resources=resources,
                         run_config=RUN_CONFIG, instance=dg.DagsterInstance.ephemeral())
    built = res.asset_materializations_for_node("dataset_version")[0].metadata["dataset_id"].value
    with Warehouse.open(curation_ws).write() as con:   # a newer version, built outside this graph
        con.execute("INSERT INTO dataset_versions (dataset_id, name, config, config_hash, rows_hash, n_rows, "
                    "n_regions, split_counts, exclusion_counts, agreement, created_at) VALUES ('sfr-newer', 'x', "
                    "'{}', 'c', 'r', 0, 0, '{}', '{}', '{}', current_timestamp + INTERVAL 1 DAY)")
    res = dg.materialize([dataset_version, dataset_export_hf], resources=resources,
                         selection=[dataset_export_hf.key], instance=dg.DagsterInstance.ephemeral())
    assert res.asset_materializations_for_node("dataset_export_hf")[0].metadata["dataset_id"].value == built
    assert (curation_ws.datasets / built / "hf" / "train-00000-of-00001.parquet").is_file()
    assert not (curation_ws.datasets / "sfr-newer").exists()
