"""Dagster assets of the `serving` domain: `grpo_check`, GRPO of the CPU image editor against the
production SFReward served by `sfr serve` (whole-image vs region credit), so that a newly
promoted model is checked in the loop it serves. Thin over sfreward.experiments.grpo.

Not part of `sfr demo`'s selection and not materialized by default: it runs on request
(`dagster asset materialize --select grpo_check`), ~30 min on 2 cores (config `quick` for
seconds)."""

import dagster as dg

from pipelines.resources import WorkspaceResource

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


defs = dg.Definitions(assets=[grpo_check])
