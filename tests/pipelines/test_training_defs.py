"""Dagster: the trainer runs through Pipes, the model is registered, evaluation and the
blocking promotion gate decide whether production moves."""
from __future__ import annotations

import dagster as dg

from pipelines.defs import training
from pipelines.resources import WorkspaceResource
from sfreward import registry

FAST = ["max_steps=6", "batch_size=6", "num_threads=1", "eval_split=", "warmup_steps=1", "lr=2.0e-3"]


def _materialize(ws, overrides, preset=""):
    return dg.materialize(
        [training.sfreward_model, training.model_evaluation, training.production_model, training.promotion_gate],
        resources={"workspace": WorkspaceResource(home=str(ws.home))},
        run_config={"ops": {"sfreward_model": {"config": {"dataset_id": "ds-test", "overrides": overrides,
                                                                    "preset": preset}}}},
        raise_on_error=False)


def test_defs_load_in_the_code_location():
    from pipelines.definitions import defs
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"sfreward_model", "model_evaluation", "production_model"} <= keys
    assert graph.get(dg.AssetKey("model_evaluation")).parent_keys == {dg.AssetKey("sfreward_model")}


def test_train_evaluate_promote_and_gate(sfreward_workspace):
    ws = sfreward_workspace
    first = _materialize(ws, FAST, preset="tiny")
    assert first.success
    mat = first.asset_materializations_for_node("sfreward_model")[0]
    mid = mat.metadata["model_id"].value
    assert registry.get_model(ws, mid)["train_config"]["preset"] == "tiny"  # lineage
    # metrics came back from the trainer process through Pipes
    assert "nll" in mat.metadata["reported_by_trainer"].value and mat.metadata["step"].value == 6
    assert registry.resolve(ws, "production") == mid
    evals = registry.get_model(ws, mid)["evaluations"]
    assert evals and evals[0]["dataset_id"] == "ds-test"

    # a model that did not learn (lr = 0) must not replace production
    second = _materialize(ws, FAST[:-1] + ["lr=0.0", "seed=7"])
    checks = second.get_asset_check_evaluations()
    assert len(checks) == 1 and not checks[0].passed
    assert "worse than production" in checks[0].metadata["reason"].value
    assert registry.resolve(ws, "production") == mid
    assert registry.resolve(ws, "candidate") != mid
    assert not second.asset_materializations_for_node("production_model")
