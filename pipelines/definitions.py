"""One Definitions object merged from the per-domain modules in `pipelines.defs`.

Each domain module exposes `defs: dagster.Definitions`. Modules are listed in data-flow order.
"""
from __future__ import annotations

import importlib

import dagster as dg

from pipelines.resources import default_resources

DOMAINS = ["ingest", "regions", "annotation", "curation", "training", "serving", "demo"]


def _load() -> dg.Definitions:
    parts = []
    for name in DOMAINS:
        try:
            mod = importlib.import_module(f"pipelines.defs.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"pipelines.defs.{name}":
                continue  # domain not built yet
            raise
        parts.append(mod.defs)
    # Resources are defined once here (domain modules must not redefine them).
    return dg.Definitions.merge(*parts, dg.Definitions(resources=default_resources()))


defs = _load()
