"""The code location lists its domains explicitly: every domain module is merged, none is
skipped."""
from __future__ import annotations

import importlib
import pkgutil

from pipelines.definitions import DOMAINS, defs

domain_package = importlib.import_module("pipelines.defs")   # (`pipelines.defs` the attribute is the Definitions)


def test_every_domain_module_is_listed_and_merged():
    modules = {m.name for m in pkgutil.iter_modules(domain_package.__path__)}
    domains = {name for name in modules if hasattr(importlib.import_module(f"pipelines.defs.{name}"), "defs")}
    assert domains == set(DOMAINS)
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    for name, module in DOMAINS.items():
        own = {a.key for a in module.defs.assets or [] if hasattr(a, "key")}
        assert own and own <= keys, name


def test_asset_values_are_stored_in_the_workspace(tmp_path, monkeypatch):
    """Run pods on Kubernetes share only the workspace volume, so asset values (the dataset id
    handed from dataset_version to its exports) live under <home>/dagster/storage."""
    from pipelines.resources import default_resources

    monkeypatch.setenv("SFR_HOME", str(tmp_path / "home"))
    assert default_resources()["io_manager"].base_dir == str(tmp_path / "home" / "dagster" / "storage")
