"""A workspace with a briefly trained tiny SFReward registered as `production`."""
import pytest


@pytest.fixture(scope="module")
def grpo_home(sfreward_trained_model, tmp_path_factory):
    from sfreward import registry
    from warehouse.workspace import Workspace

    ws = Workspace.open(tmp_path_factory.mktemp("grpo") / "home")
    registry.register_model(ws, sfreward_trained_model, None, alias="production")
    return ws.home
