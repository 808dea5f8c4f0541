"""Dagster code location and the `sfr` CLI: thin layers over the plain functions in
`warehouse`, `sfreward` and `annotation`.

`dagster dev -m pipelines` / `dagster definitions validate -m pipelines` load `defs` below.
"""
from pipelines.definitions import defs

__all__ = ["defs"]
