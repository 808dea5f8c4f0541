"""Ingestion in Dagster: batches are dynamic partitions of `editing_samples`.

A sensor registers every new manifest dropped into `<home>/incoming/` (and every batch that
`sfr ingest` recorded in the warehouse) as a partition and requests a run for it. Datasets in
other schemas take the options of `sfr ingest --schema/--map`: in the run config, or in a
`sfr-columns.json` ({"schema": ..., "columns": {field: column}}) inside a dropped folder.
"""

import json

import dagster as dg
from pydantic import Field

from pipelines.configs import dagster_config, from_dagster
from pipelines.partitions import BATCHES
from pipelines.resources import WAREHOUSE_POOL, WorkspaceResource
from warehouse.batches import batch_ids, batches_without_valid_samples
from warehouse.ingest import IngestConfig, ingest_batch, register_batch
from warehouse.sources import PRESETS, SourceOptions, is_hf_disk
from warehouse.workspace import Workspace


class IngestRunConfig(dagster_config(IngestConfig, ("chunk_size", "max_pixels"))):
    # Column mapping, as `sfr ingest --schema/--map`; empty: the mapping the batch was
    # registered with (or our own column names).
    source_schema: str = Field(default="", description="column names of a public schema: one of "
                                                       + ", ".join(sorted(PRESETS)))
    columns: dict[str, str] = Field(default={}, description="our field -> the dataset's column; "
                                                            "overrides the source_schema preset")

    def source_options(self) -> SourceOptions | None:
        if not self.source_schema and not self.columns:
            return None
        if self.source_schema and self.source_schema not in PRESETS:
            raise dg.Failure(f"source_schema {self.source_schema!r} is not one of {sorted(PRESETS)}")
        return SourceOptions(self.source_schema or None, dict(self.columns))


@dg.asset(
    partitions_def=BATCHES,
    group_name="ingest",
    kinds={"duckdb", "python"},
    owners=["team:data-eng"],
    code_version="1",
    pool=WAREHOUSE_POOL,
    description="Validated editing samples of one batch, images in the content-addressed store; "
                "bad rows quarantined with their reason.",
)
def editing_samples(context: dg.AssetExecutionContext, config: IngestRunConfig,
                    workspace: WorkspaceResource) -> dg.MaterializeResult:
    summary = ingest_batch(workspace.workspace(), context.partition_key,
                           from_dagster(IngestConfig, config, source_options=config.source_options()))
    d = summary.as_dict()
    return dg.MaterializeResult(
        metadata={"rows": d["rows"], "ingested": d["ingested"], "duplicates": d["duplicates"],
                  "quarantined": d["quarantined"],
                  "quarantine_reasons": dg.MetadataValue.json(d["quarantine_reasons"])},
        data_version=dg.DataVersion(summary.batch_id),
    )


@dg.asset_check(asset=editing_samples, blocking=True, description="At least one valid sample in the batch.")
def batch_not_all_quarantined(context: dg.AssetCheckExecutionContext, workspace: WorkspaceResource) -> dg.AssetCheckResult:
    bad = batches_without_valid_samples(workspace.warehouse())
    return dg.AssetCheckResult(passed=not bad, metadata={"batches_without_valid_samples": dg.MetadataValue.json(bad)})


def discover_batches(ws: Workspace) -> list[str]:
    """Register new inputs and return all known batch ids (plain function).

    Inputs: manifests (*.jsonl) and parquet datasets dropped into <home>/incoming, folders there
    holding a manifest.jsonl, and rollouts captured by the reward server (<home>/batches/*/)."""
    candidates = []
    for path in sorted(ws.incoming.glob("*")):
        if path.is_file() and path.suffix in (".jsonl", ".parquet"):
            candidates.append(path)
        elif path.is_dir() and (path / "manifest.jsonl").is_file():
            candidates.append(path / "manifest.jsonl")
        elif path.is_dir() and (is_hf_disk(path) or any(path.rglob("*.parquet"))):
            candidates.append(path)
    candidates += sorted(ws.batches.glob("*/manifest.jsonl"))
    for path in candidates:
        try:
            register_batch(ws, path, options=_sidecar_options(path))
        except ValueError:
            continue  # unreadable input: editing_samples reports it if it is ever requested
    from warehouse.db import Warehouse
    return batch_ids(Warehouse.open(ws))


def _sidecar_options(path) -> SourceOptions | None:
    """The column mapping a dropped dataset folder carries in sfr-columns.json, if any."""
    side = path / "sfr-columns.json" if path.is_dir() else None
    if side is None or not side.is_file():
        return None
    d = json.loads(side.read_text())  # a bad file raises ValueError: the folder is skipped
    return SourceOptions(d.get("schema"), dict(d.get("columns") or {}))


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Registers new batches (files in <home>/incoming, or `sfr ingest` runs) as partitions.")
def incoming_batches_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource) -> dg.SensorResult:
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    batch_ids = discover_batches(workspace.workspace())
    new = [b for b in batch_ids if b not in seen]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=b, asset_selection=[editing_samples.key]) for b in new],
        dynamic_partitions_requests=[BATCHES.build_add_request(new)] if new else [],
        cursor=json.dumps(sorted(seen | set(new))),
    )


defs = dg.Definitions(assets=[editing_samples], asset_checks=[batch_not_all_quarantined],
                      sensors=[incoming_batches_sensor])
