"""Region proposals in Dagster: one region set per GRPO group of each ingested batch.

Thin layer over `sfreward.regions.propose_for_batch`. The proposer comes from run config, or
from $SFR_SAM_CHECKPOINT / $SFR_SAM_MODEL_TYPE when the run config leaves it empty; with
neither, the classical (weight-free) proposer runs and the metadata says so.
"""

import os

import dagster as dg

from pipelines.partitions import BATCHES
from pipelines.resources import WorkspaceResource
from sfreward.regions import ProposerConfig, propose_for_batch

# SAM steps hold a GPU: the "gpu" pool (limit it to the number of GPUs in dagster.yaml) keeps
# concurrent partitions from fighting over it. Their warehouse writes are short transactions
# under the warehouse lock, so they do not need the warehouse pool as well.
GPU_POOL = "gpu"

class RegionProposalsConfig(dg.Config):
    """Proposer settings; empty model_type/checkpoint fall back to the environment."""

    model_type: str = ""
    checkpoint: str = ""
    device: str = "auto"
    name: str = "default"
    points_per_side: int = 16
    max_regions: int = ProposerConfig().max_regions   # one default: the proposer's
    min_area_frac: float = 0.002
    nms_iou: float = 0.7

    def proposer_config(self) -> ProposerConfig:
        checkpoint = self.checkpoint or os.environ.get("SFR_SAM_CHECKPOINT", "")
        model_type = self.model_type or (os.environ.get("SFR_SAM_MODEL_TYPE", "vit_b") if checkpoint else "")
        return ProposerConfig(name=self.name, model_type=model_type or None,
                              checkpoint=checkpoint or None, device=self.device,
                              points_per_side=self.points_per_side, max_regions=self.max_regions,
                              min_area_frac=self.min_area_frac, nms_iou=self.nms_iou)

@dg.asset(
    partitions_def=BATCHES,
    deps=[dg.AssetKey("editing_samples")],
    group_name="regions",
    kinds={"pytorch", "duckdb"},
    owners=["team:ml"],
    code_version="1",
    pool=GPU_POOL,
    description="Edit-guided region proposals (SAM or classical), one set per GRPO group on the "
                "shared source, stored as COCO RLE in region_sets/regions.",
)
def region_proposals(context: dg.AssetExecutionContext, config: RegionProposalsConfig,
                     workspace: WorkspaceResource) -> dg.MaterializeResult:
    pc = config.proposer_config()
    summary = propose_for_batch(workspace.workspace(), context.partition_key, pc)
    if summary["n_failed"]:
        context.log.warning(f"{summary['n_failed']} group(s) failed: {summary['failures'][:5]}")
    return dg.MaterializeResult(
        metadata={
            "proposer": summary["proposer"],
            "config_hash": summary["config_hash"],
            "groups": summary["n_groups"],
            "proposed": summary["n_proposed"],
            "existing": summary["n_existing"],
            "failed": summary["n_failed"],
            "regions": summary["n_regions"],
            "failures": dg.MetadataValue.json(summary["failures"]),
            "seconds": summary["seconds"],
        },
        # Same batch + same proposer config = same region sets (reruns are no-ops).
        data_version=dg.DataVersion(
            f"{context.partition_key}:{summary['config_hash']}:{summary['n_groups'] - summary['n_failed']}"),
    )

defs = dg.Definitions(assets=[region_proposals])
