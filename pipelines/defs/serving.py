"""Dagster assets of the `serving` domain.

`grpo_check`: GRPO of the CPU image editor against the production SFReward served by
`sfr serve` (whole-image vs region credit), so that a newly promoted model is checked in the
loop it serves. Thin over sfreward.experiments.grpo. Not part of `sfr demo`'s selection and not
materialized by default: it runs on request (`dagster asset materialize --select grpo_check`),
~30 min on 2 cores (config `quick` for seconds).

The data flywheel (docs/serving.md): `captured_rollouts_sensor` turns each rollout batch that
`sfr serve --capture-rate` wrote under <home>/batches/capture-*/ into a `batches` partition and
requests editing_samples -> region_proposals -> `flywheel_selection` (the sampling policy of
sfreward.flywheel, recorded in the warehouse) -> `flywheel_tasks` (the selected rollouts pushed
to Label Studio). Synced annotations of those tasks reach the next dataset version through the
curation assets like any others. Thin over sfreward.flywheel and annotation.push.
"""
import dataclasses
import json

import dagster as dg

from pipelines.configs import dagster_config, documented_fields, from_dagster
from pipelines.partitions import BATCHES
from pipelines.resources import LABELSTUDIO_POOL, WAREHOUSE_POOL, WorkspaceResource
from sfreward.flywheel import FlywheelConfig

GROUP = "serving"


class GRPOCheckConfig(dg.Config):
    quick: bool = False               # tiny config (for tests; numbers mean nothing)
    rl_steps: int = 0                 # 0: the experiment's default
    seeds: list[int] = []             # empty: the experiment's default (3 seeds)


@dg.asset(group_name=GROUP, kinds={"pytorch"}, code_version="1", deps=[dg.AssetKey("production_model")],
          description="GRPO of a CPU editor with the production SFReward over HTTP: region vs whole-image "
                      "credit, judged on ground truth (report under <home>/reports/grpo_check/<model_id>).")
def grpo_check(context: dg.AssetExecutionContext, config: GRPOCheckConfig,
               workspace: WorkspaceResource) -> dg.MaterializeResult:
    from sfreward import registry
    from sfreward.experiments.grpo import GRPOExperimentConfig, run_grpo_experiment

    ws = workspace.workspace()
    model_id = registry.resolve(ws, "production")
    cfg = GRPOExperimentConfig.quick() if config.quick else GRPOExperimentConfig()
    if config.rl_steps:
        cfg.rl_steps = config.rl_steps
    if config.seeds:
        cfg.seeds = list(config.seeds)
    res = run_grpo_experiment(cfg, ws.reports / "grpo_check" / model_id, home=ws.home, model=model_id,
                              cache_dir=ws.home / "cache" / "grpo", command="dagster asset grpo_check")
    meta = {"model_id": model_id, "report": dg.MetadataValue.path(res["paths"]["md"]), "wall_s": res["wall_s"]}
    for arm, s in res["summary"].items():
        for split in ("heldout", "multiedit"):
            meta[f"{arm}_{split}_success"] = s[split]["success"][0]
            meta[f"{arm}_{split}_preserve"] = s[split]["preserve"][0]
    return dg.MaterializeResult(metadata=meta)


FlywheelRunConfig = dagster_config(FlywheelConfig, documented_fields(FlywheelConfig), name="FlywheelRunConfig")


def _flywheel_config(config: dg.Config) -> FlywheelConfig:
    try:
        return from_dagster(FlywheelConfig, config)
    except ValueError as e:
        raise dg.Failure(f"run config: {e}") from None


@dg.asset(partitions_def=BATCHES, deps=[dg.AssetKey("editing_samples")], group_name=GROUP,
          kinds={"duckdb", "pytorch"}, owners=["team:ml"], code_version="1", pool=WAREHOUSE_POOL,
          description="The captured rollouts of one batch chosen for annotation by the flywheel's sampling "
                      "policy (top-k by predicted std or candidate/production disagreement, within a daily "
                      "budget); decided once and recorded in flywheel_decisions / flywheel_selections.")
def flywheel_selection(context: dg.AssetExecutionContext, config: FlywheelRunConfig,
                       workspace: WorkspaceResource) -> dg.MaterializeResult:
    from sfreward.flywheel.selection import FlywheelError, decide_batch

    try:
        d = decide_batch(workspace.workspace(), context.partition_key, _flywheel_config(config))
    except FlywheelError as e:
        raise dg.Failure(str(e)) from None
    if d.recorded_before:
        context.log.info(f"batch {d.batch_id} was decided before: {len(d.picks)} selected (not decided again)")
    meta = d.as_metadata()
    return dg.MaterializeResult(
        metadata={**{k: v for k, v in meta.items() if not isinstance(v, (dict, list))},
                  "used_per_day": dg.MetadataValue.json(meta["used_per_day"]),
                  "selected_ids": dg.MetadataValue.json(meta["selected_ids"])},
        data_version=dg.DataVersion(json.dumps([d.policy, meta["selected_ids"]])))


@dg.asset(partitions_def=BATCHES, deps=[flywheel_selection, dg.AssetKey("region_proposals")], group_name=GROUP,
          kinds={"labelstudio", "duckdb"}, owners=["team:data-eng"], code_version="1", pool=LABELSTUDIO_POOL,
          description="The flywheel's selected rollouts as Label Studio tasks with prefilled proposal regions, "
                      "highest score first, in the project recorded with the decision (idempotent: keyed by "
                      "sample id).")
def flywheel_tasks(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.MaterializeResult:
    from annotation.client import Connection
    from annotation.push import push_batch
    from annotation.server import ensure_server
    from sfreward.flywheel.selection import recorded
    from warehouse.db import Warehouse

    ws = workspace.workspace()
    d = recorded(Warehouse.open(ws), context.partition_key)
    if d is None:
        raise dg.Failure(f"batch {context.partition_key!r} has no flywheel decision yet; "
                         "materialize flywheel_selection for it first")
    if not d.picks:
        return dg.MaterializeResult(metadata={"project_key": d.project_key, "selected": 0, "imported": 0})
    url, key = ensure_server(ws)
    # The project recorded with the decision, so that a rerun pushes to the same place (never
    # twice); priority 0..1 from the 0..25 score: Label Studio hands tasks out in that order.
    s = push_batch(ws, d.project_key, sample_ids=[p.candidate.sample_id for p in d.picks],
                   uncertainty={p.candidate.sample_id: p.candidate.score / 25.0 for p in d.picks},
                   conn=Connection(url, key))
    if s.errors:
        context.log.warning(f"{len(s.errors)} samples were not pushed: {dict(list(s.errors.items())[:5])}")
    return dg.MaterializeResult(metadata={
        "project_key": s.project_key, "ls_project_id": s.ls_project_id, "selected": len(d.picks),
        "imported": s.imported, "already_pushed": s.already_pushed, "adopted": s.adopted,
        "without_regions": s.without_regions, "errors": dg.MetadataValue.json(s.errors)})


FLYWHEEL_ASSETS = [dg.AssetKey("editing_samples"), dg.AssetKey("region_proposals"), flywheel_selection.key,
                   flywheel_tasks.key]


def flywheel_run_config(cfg: FlywheelConfig) -> dict:
    return {"ops": {"flywheel_selection": {"config": dataclasses.asdict(cfg)}}}


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Turns each rollout batch captured by `sfr serve --capture-rate` into a batch partition "
                       "and requests ingest -> region proposals -> flywheel selection -> Label Studio tasks. "
                       "Policy settings: SFR_FLYWHEEL_* (docs/serving.md).")
def captured_rollouts_sensor(context: dg.SensorEvaluationContext,
                             workspace: WorkspaceResource) -> dg.SensorResult | dg.SkipReason:
    from sfreward.flywheel.selection import register_captured_batches

    cfg = FlywheelConfig.from_env()   # a bad SFR_FLYWHEEL_* value fails the tick, naming it
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    new = register_captured_batches(workspace.workspace(), skip=seen)
    if not new:
        return dg.SkipReason("no new captured rollout batches")
    batch_ids = list(dict.fromkeys(new.values()))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"flywheel-{b}", partition_key=b, asset_selection=FLYWHEEL_ASSETS,
                                    run_config=flywheel_run_config(cfg), tags={"sfr/flywheel": "captured"})
                      for b in batch_ids],
        dynamic_partitions_requests=[BATCHES.build_add_request(batch_ids)],
        cursor=json.dumps(sorted(seen | set(new))))


defs = dg.Definitions(assets=[grpo_check, flywheel_selection, flywheel_tasks], sensors=[captured_rollouts_sensor])
