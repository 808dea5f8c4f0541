"""Dagster assets for SFReward training: `sfreward_model` (`sfreward.train.train_and_register`
with a runner that launches the trainer through Dagster Pipes, metrics streamed back, model
registered as `candidate`), `model_evaluation` (test split, candidate and production), a
blocking promotion-gate check, and `production_model` (promotes the candidate once the gate
passes). Thin layer over sfreward.train.api."""

import dagster as dg

from pipelines.configs import dagster_config, documented_fields, from_dagster
from pipelines.resources import TRAINING_POOL, WAREHOUSE_POOL, WorkspaceResource
from sfreward.train.config import TrainRequest

GROUP = "training"


class TrainingRunConfig(dagster_config(TrainRequest, documented_fields(TrainRequest))):
    """sfreward_model's run config: the fields of sfreward.train.api.TrainRequest."""


class PipesTrainer:
    """A `train_and_register` runner (sfreward.train.api.Runner) that launches the trainer,
    `python -m sfreward.train` (torchrun when nproc > 1), through Dagster Pipes: the trainer
    streams its progress to the run's log and reports its final metrics as materialization
    metadata (kept in `reported`); the model itself is read back from the run directory."""

    def __init__(self, context: dg.AssetExecutionContext, env: dict[str, str], nproc: int = 1):
        self.context, self.env, self.nproc = context, env, nproc
        self.reported: dict | None = None      # None: the trainer did not run (a reused model)

    def __call__(self, cfg):
        from sfreward.train.api import read_run, trainer_command

        invocation = dg.PipesSubprocessClient().run(context=self.context, command=trainer_command(cfg, self.nproc),
                                                    env=self.env)
        mats = [r for r in invocation.get_results() if isinstance(r, dg.MaterializeResult)]
        self.reported = {k: getattr(v, "value", v) for k, v in (mats[-1].metadata or {}).items()} if mats else {}
        return read_run(cfg)


@dg.asset(group_name=GROUP, kinds={"pytorch", "duckdb"}, code_version="1",
          deps=[dg.AssetKey("dataset_export_hf")], pool=TRAINING_POOL,
          description="SFReward model trained on a dataset version, registered as candidate.")
def sfreward_model(context: dg.AssetExecutionContext, config: TrainingRunConfig,
                   workspace: WorkspaceResource) -> dg.MaterializeResult:
    from sfreward import registry
    from sfreward.train import train_and_register
    from warehouse.datasets import current_dataset_id

    ws = workspace.workspace()
    dataset_id = config.dataset_id or current_dataset_id(ws, export="hf")
    cfg = from_dagster(TrainRequest, config).train_config()
    trainer = PipesTrainer(context, env={"SFR_HOME": str(ws.home)}, nproc=config.nproc)
    # Evaluation is the downstream `model_evaluation` asset's job, hence eval_split="".
    model_id = train_and_register(ws, dataset_id, cfg, runner=trainer, eval_split="", reuse=not config.retrain)
    if trainer.reported is None:  # a rerun reuses the model instead of training it again
        return dg.MaterializeResult(metadata={"model_id": model_id, "dataset_id": dataset_id, "reused": True},
                                    data_version=dg.DataVersion(model_id))
    context.log.info(f"registered {model_id} (candidate) trained on {dataset_id}")
    reported = trainer.reported
    parent = registry.get_model(ws, model_id)["parent_model_id"]
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
