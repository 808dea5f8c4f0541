"""The `serving` domain's `grpo_check` asset: downstream of production_model, outside the demo's
selection, and materialized by Dagster (quick config) against a registered model."""
import dagster as dg
import pytest


@pytest.fixture(scope="module")
def grpo_home(sfreward_trained_model, tmp_path_factory):
    """A workspace with a briefly trained tiny SFReward registered as `production`."""
    from sfreward import registry
    from warehouse.workspace import Workspace

    ws = Workspace.open(tmp_path_factory.mktemp("grpo-defs") / "home")
    registry.register_model(ws, sfreward_trained_model, None, alias="production")
    return ws.home


def test_grpo_check_is_downstream_of_production_and_not_in_the_demo():
    from pipelines.definitions import DOMAINS, defs
    assert "serving" in DOMAINS
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey("grpo_check")
    assert dg.AssetKey("production_model") in graph.get(key).parent_keys
    assert graph.get(key).group_name == "serving"
    import inspect

    import pipelines.demo as demo
    assert "grpo_check" not in inspect.getsource(demo)


@pytest.mark.slow
def test_grpo_check_materializes_with_a_registered_model(grpo_home):
    from pipelines.defs.serving import grpo_check
    from pipelines.resources import WorkspaceResource

    res = dg.materialize([grpo_check], resources={"workspace": WorkspaceResource(home=str(grpo_home))},
                         run_config={"ops": {"grpo_check": {"config": {"quick": True}}}})
    assert res.success
    meta = res.asset_materializations_for_node("grpo_check")[0].metadata
    assert {"whole_heldout_success", "region_heldout_success", "model_id"} <= set(meta)
    assert 0 <= meta["region_multiedit_preserve"].value <= 25
