"""Reads of the annotation tables (`ls_projects`, `annotations`) for the orchestration layer,
named here so the Dagster defs hold no SQL (push and sync write these tables)."""
from __future__ import annotations

from warehouse.db import Warehouse


def projects(wh: Warehouse) -> list[tuple[str, int]]:
    """(project_key, ls_project_id) of every Label Studio project pushed to, by key."""
    return [(k, int(p)) for k, p in wh.query("SELECT project_key, ls_project_id FROM ls_projects ORDER BY project_key")]


def validity_counts(wh: Warehouse, include_cancelled: bool = True) -> tuple[int, int]:
    """(current annotations, invalid ones) over all projects; deleted annotations never count,
    skipped (cancelled) ones only with `include_cancelled`."""
    where = "NOT is_deleted" + ("" if include_cancelled else " AND NOT was_cancelled")
    total, invalid = wh.query(f"SELECT count(*), count(*) FILTER (WHERE NOT valid) FROM annotations WHERE {where}")[0]
    return int(total), int(invalid)
