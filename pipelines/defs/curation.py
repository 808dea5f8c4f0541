"""Curation in Dagster: a thin layer over `warehouse.curation`.

aggregated_labels -> agreement_report -> dataset_version -> dataset_export_{hf,reward_json,sft}.
The dataset id travels along the asset graph: `dataset_version`'s output value is the id, the
exports and the checks take it as their input (stored by the `io_manager` resource under
<home>/dagster/storage, so a later run can export a version built earlier).
Checks on dataset_version: no split leakage, no near-duplicate test source, labels complete and
every mask decodes are
blocking (a failure stops the exports); agreement above the floor warns.
"""

import json

import dagster as dg

from pipelines.resources import WAREHOUSE_POOL, WorkspaceResource
from warehouse.curation import CurationConfig, build_dataset, export_hf, export_reward_json, export_sft
from warehouse.curation.aggregate import aggregate
from warehouse.curation.agreement import agreement_report as compute_agreement_report
from warehouse.curation.checks import (check_agreement_floor, check_labels_complete, check_masks_decode,
                                       check_no_leakage, check_no_near_duplicate_sources)
from warehouse.curation.throughput import annotator_throughput, throughput_markdown
from warehouse.db import Warehouse

GROUP = "curation"


class CurationRunConfig(dg.Config):
    """Overrides of `warehouse.curation.CurationConfig` as JSON, e.g. '{"seed": 1}' or
    '{"default_ratings": "ignore"}' (default-filled ratings count as missing)."""

    overrides_json: str = "{}"

    def curation_config(self) -> CurationConfig:
        try:
            overrides = json.loads(self.overrides_json or "{}")
        except json.JSONDecodeError as e:
            raise dg.Failure(f"overrides_json is not valid JSON: {e}") from e
        return CurationConfig.from_dict(overrides)


@dg.asset(group_name=GROUP, kinds={"duckdb", "sql"}, code_version="1", pool=WAREHOUSE_POOL,
          deps=["synced_annotations"], owners=["team:data-eng"],
          description="Per-region and per-image aggregates (count, mean, median, std) of the current ratings.")
def aggregated_labels(workspace: WorkspaceResource) -> dg.MaterializeResult:
    counts = aggregate(workspace.workspace())
    return dg.MaterializeResult(metadata={"samples": counts["samples"], "regions": counts["regions"]})


@dg.asset(group_name=GROUP, kinds={"duckdb", "python"}, code_version="1", pool=WAREHOUSE_POOL,
          deps=[aggregated_labels], owners=["team:data-eng"],
          description="Krippendorff's alpha (ordinal) per dimension, project and batch; annotator quality.")
def agreement_report(config: CurationRunConfig, workspace: WorkspaceResource) -> dg.MaterializeResult:
    report = compute_agreement_report(workspace.workspace(), config.curation_config())
    summary = report.summary()
    throughput = annotator_throughput(Warehouse.open(workspace.workspace()), report.report_id)
    return dg.MaterializeResult(
        metadata={"report_id": report.report_id, "alpha": dg.MetadataValue.json(summary["alpha"]),
                  "flagged_annotators": dg.MetadataValue.json(report.flagged_annotators),
                  "annotator_throughput": dg.MetadataValue.md("\n".join(throughput_markdown(throughput)))},
        data_version=dg.DataVersion(report.report_id))


@dg.asset(group_name=GROUP, kinds={"duckdb", "python"}, code_version="1", pool=WAREHOUSE_POOL,
          deps=[aggregated_labels, agreement_report], owners=["team:data-eng"],
          description="A versioned SFReward dataset: filtered rows, stable leakage-free splits; "
                      "id = content hash of rows and config.")
def dataset_version(config: CurationRunConfig, workspace: WorkspaceResource) -> dg.MaterializeResult:
    v = build_dataset(workspace.workspace(), config.curation_config())
    return dg.MaterializeResult(
        value=v.dataset_id,   # what the exports and checks receive as their input
        metadata={"dataset_id": v.dataset_id, "rows": v.n_rows, "regions": v.n_regions,
                  "splits": dg.MetadataValue.json(v.split_counts),
                  "exclusions": dg.MetadataValue.json(v.exclusion_counts),
                  "alpha": dg.MetadataValue.json(v.agreement.get("alpha", {}))},
        data_version=dg.DataVersion(v.dataset_id))


def _export_asset(name: str, fn, fmt: str):
    @dg.asset(name=name, group_name=GROUP, kinds={"parquet" if fmt == "hf" else "json"}, code_version="1",
              ins={"dataset_version": dg.AssetIn()}, owners=["team:data-eng"],
              description=f"Export ({fmt}) of the dataset version built upstream, with its dataset card.")
    def _asset(dataset_version: str, workspace: WorkspaceResource) -> dg.MaterializeResult:
        dataset_id = dataset_version
        path = fn(workspace.workspace(), dataset_id)
        files = sorted(p.name for p in path.iterdir())
        return dg.MaterializeResult(metadata={"dataset_id": dataset_id, "path": dg.MetadataValue.path(str(path)),
                                              "files": dg.MetadataValue.json(files)},
                                    data_version=dg.DataVersion(dataset_id))
    return _asset


dataset_export_hf = _export_asset("dataset_export_hf", export_hf, "hf")
dataset_export_reward_json = _export_asset("dataset_export_reward_json", export_reward_json, "reward_json")
dataset_export_sft = _export_asset("dataset_export_sft", export_sft, "sft")


def _result(passed: bool, details: dict, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=passed, severity=severity,
                               metadata={k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v
                                         for k, v in details.items()})


@dg.asset_check(asset=dataset_version, blocking=True, description="No source image, edited image or GRPO "
                "group appears in two splits.")
def no_split_leakage(dataset_version: str, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    return _result(*check_no_leakage(workspace.workspace(), dataset_version))


@dg.asset_check(asset=dataset_version, blocking=True, description="No test sample's source photo is a "
                "near-duplicate (flip, 90-degree turn, crop, resize, re-encode) of a training source.")
def no_near_duplicate_sources(dataset_version: str, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    return _result(*check_no_near_duplicate_sources(workspace.workspace(), dataset_version))


@dg.asset_check(asset=dataset_version, blocking=True, description="Every row has image scores and regions; "
                "every region has a score.")
def labels_complete(dataset_version: str, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    return _result(*check_labels_complete(workspace.workspace(), dataset_version))


@dg.asset_check(asset=dataset_version, blocking=True, description="Every region mask decodes, fits its box "
                "and matches its area.")
def region_masks_decode(dataset_version: str, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    return _result(*check_masks_decode(workspace.workspace(), dataset_version))


@dg.asset_check(asset=dataset_version, blocking=False, description="Krippendorff's alpha of every dimension "
                "is at least the configured floor (alpha_floor).")
def agreement_above_floor(dataset_version: str, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    return _result(*check_agreement_floor(workspace.workspace(), dataset_version),
                   severity=dg.AssetCheckSeverity.WARN)


defs = dg.Definitions(
    assets=[aggregated_labels, agreement_report, dataset_version, dataset_export_hf, dataset_export_reward_json,
            dataset_export_sft],
    asset_checks=[no_split_leakage, no_near_duplicate_sources, labels_complete, region_masks_decode,
                  agreement_above_floor],
)
