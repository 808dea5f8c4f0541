"""Dagster assets for SFReward training: `sfreward_model` (trainer launched through Dagster
Pipes, metrics streamed back, model registered as `candidate`), `model_evaluation` (test
split, candidate and production), a blocking promotion-gate check, and `production_model`
(promotes the candidate once the gate passes). Thin layer over sfreward.train.api."""

import dagster as dg

from pipelines.resources import TRAINING_POOL, WAREHOUSE_POOL, WorkspaceResource

GROUP = "training"


class TrainingRunConfig(dg.Config):
    dataset_id: str = ""              # empty: the most recent export under <home>/datasets
    preset: str = ""                  # model preset (tiny, demo, base, large), as `sfr train --preset`
    config_file: str = ""             # YAML with TrainConfig fields
    overrides: list[str] = []         # key=value, as `sfr train --set`
    nproc: int = 1                    # > 1: torchrun DDP in the launched process
    retrain: bool = False             # train even if this dataset + config was trained before


def _meta_value(v):
    return getattr(v, "value", v)


@dg.asset(group_name=GROUP, kinds={"pytorch", "duckdb"}, code_version="1",
          deps=[dg.AssetKey("dataset_export_hf")], pool=TRAINING_POOL,
          description="SFReward model trained on a dataset version, registered as candidate.")
def sfreward_model(context: dg.AssetExecutionContext, config: TrainingRunConfig,
                   workspace: WorkspaceResource) -> dg.MaterializeResult:
    from sfreward import registry
    from sfreward.train import load_config
    from sfreward.train.api import find_trained, latest_dataset, prepare_config, read_run, trainer_command

    ws = workspace.workspace()
    dataset_id = config.dataset_id or latest_dataset(ws)
    cfg, parent = prepare_config(ws, dataset_id, load_config(config.config_file or None, list(config.overrides),
                                                         preset=config.preset or None))
    existing = None if config.retrain else find_trained(ws, dataset_id, cfg)
    if existing is not None:  # a rerun reuses the model instead of training it again
        registry.set_alias(ws, "candidate", existing)
        context.log.info(f"reusing {existing}: already trained on {dataset_id} with this config")
        return dg.MaterializeResult(metadata={"model_id": existing, "dataset_id": dataset_id, "reused": True},
                                    data_version=dg.DataVersion(existing))
    client = dg.PipesSubprocessClient()
    # The trainer reports its metrics through Pipes; the model itself goes to the run dir.
    invocation = client.run(context=context, command=trainer_command(cfg, config.nproc),
                            env={"SFR_HOME": str(ws.home)})
    reported = {}
    mats = [r for r in invocation.get_results() if isinstance(r, dg.MaterializeResult)]
    if mats:
        reported = {k: _meta_value(v) for k, v in (mats[-1].metadata or {}).items()}
    model_dir, metrics = read_run(cfg)
    model_id = registry.register_model(ws, model_dir, dataset_id, train_config=cfg.to_dict(),
                                       metrics=metrics, parent_model_id=parent)
    context.log.info(f"registered {model_id} (candidate) trained on {dataset_id}")
    numeric = {k: float(v) for k, v in reported.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return dg.MaterializeResult(
        metadata={"model_id": model_id, "dataset_id": dataset_id, "parent_model_id": parent or "",
                  "reported_by_trainer": sorted(reported), **numeric},
        data_version=dg.DataVersion(model_id))


@dg.asset(group_name=GROUP, kinds={"pytorch", "duckdb"}, code_version="1", deps=[sfreward_model],
          pool=WAREHOUSE_POOL, description="Candidate (and production) evaluated on the test split.")
def model_evaluation(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.MaterializeResult:
    from sfreward import registry
    from sfreward.train.api import ensure_production_evaluated, evaluate_and_record

    ws = workspace.workspace()
    rec = registry.get_model(ws, "candidate")
    dataset_id = rec["dataset_id"]
    metrics = registry.get_evaluation(ws, rec["model_id"], dataset_id, "test") or \
        evaluate_and_record(ws, rec["model_id"], dataset_id, "test")
    prod = ensure_production_evaluated(ws, dataset_id, "test")
    meta = {"model_id": rec["model_id"], "dataset_id": dataset_id,
            **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
    if prod:
        meta["production_localization_auroc"] = float(prod.get("localization_auroc") or 0.0)
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=model_evaluation, blocking=True,
                description="Candidate is not worse than production on the same test evaluation.")
def promotion_gate(workspace: WorkspaceResource) -> dg.AssetCheckResult:
    from sfreward import registry

    ws = workspace.workspace()
    rec = registry.get_model(ws, "candidate")
    gate = registry.promotion_gate(ws, rec["model_id"], rec["dataset_id"], "test")
    return dg.AssetCheckResult(
        passed=gate.passed,
        metadata={"reason": gate.reason, "candidate": gate.candidate,
                  "production": gate.production or "",
                  **{f"delta_{k}": float(v["delta"]) for k, v in gate.comparison.items()}})


@dg.asset(group_name=GROUP, kinds={"duckdb"}, code_version="1", deps=[model_evaluation],
          pool=WAREHOUSE_POOL, description="The production alias, moved to the candidate.")
def production_model(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.MaterializeResult:
    from sfreward import registry

    ws = workspace.workspace()
    rec = registry.get_model(ws, "candidate")
    gate = registry.promote(ws, rec["model_id"], "production", dataset_id=rec["dataset_id"], split="test")
    return dg.MaterializeResult(metadata={"model_id": rec["model_id"], "gate": gate.reason})


defs = dg.Definitions(assets=[sfreward_model, model_evaluation, production_model],
                      asset_checks=[promotion_gate])
