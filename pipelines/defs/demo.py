"""Demo-only assets: simulated annotators on a synthetic batch, and held-out scoring with the
candidate model (a picture of regions colored by predicted score). Thin over `pipelines.demo`."""
import json

import dagster as dg

from pipelines.partitions import BATCHES
from pipelines.resources import LABELSTUDIO_POOL, WorkspaceResource

GROUP = "demo"


class SimulatedAnnotationConfig(dg.Config):
    project_key: str = "sfreward-v1"
    annotators_per_task: int = 3


@dg.asset(partitions_def=BATCHES, deps=[dg.AssetKey("annotation_tasks")], group_name=GROUP,
          kinds={"labelstudio", "python"}, owners=["team:data-eng"], code_version="1", pool=LABELSTUDIO_POOL,
          description="SIMULATED annotators (bots with configured noise) annotate the batch's Label "
                      "Studio tasks from the synthetic ground truth. Synthetic batches only.")
def simulated_annotations(context: dg.AssetExecutionContext, config: SimulatedAnnotationConfig,
                          workspace: WorkspaceResource) -> dg.MaterializeResult:
    from pipelines.demo import simulate_batch

    summary = simulate_batch(workspace.workspace(), context.partition_key, config.project_key,
                             config.annotators_per_task)
    return dg.MaterializeResult(metadata={
        "simulated": True, "tasks_seen": summary["tasks_seen"],
        "created": dg.MetadataValue.json(summary["created"]),
        "skipped": dg.MetadataValue.json(summary["skipped"]),
        "errors": len(summary["errors"])})


class HeldoutConfig(dg.Config):
    model: str = "candidate"
    n_pictures: int = 4


@dg.asset(deps=[dg.AssetKey("model_evaluation")], group_name=GROUP, kinds={"pytorch"},
          owners=["team:ml"], code_version="1",
          description="Held-out (test split) samples scored by the model; a PNG of edits with each "
                      "region colored by its predicted score.")
def heldout_scores(context: dg.AssetExecutionContext, config: HeldoutConfig,
                   workspace: WorkspaceResource) -> dg.MaterializeResult:
    from pipelines.demo import score_heldout

    out = score_heldout(workspace.workspace(), config.model, config.n_pictures)
    return dg.MaterializeResult(metadata={
        "model": out["model_version"], "dataset_id": out["dataset_id"], "scored": out["n_scored"],
        "invalid": out["n_invalid"], "picture": dg.MetadataValue.path(out["picture"]),
        "scores": dg.MetadataValue.path(out["scores_json"]),
        "region_mae_vs_labels": dg.MetadataValue.json(json.loads(json.dumps(out["mae"])))})


defs = dg.Definitions(assets=[simulated_annotations, heldout_scores])
