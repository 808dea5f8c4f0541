"""Counts of what each stage put into the warehouse (ingest, regions, annotation), for `sfr
status` style summaries and the demo report. One read each; named so callers hold no SQL."""
from __future__ import annotations

from warehouse.db import Warehouse

# name -> (SQL, whether it is filtered by batch)
_COUNTS = {
    "samples": ("SELECT count(*) FROM samples WHERE batch_id = ?", True),
    "quarantined": ("SELECT count(*) FROM quarantine WHERE batch_id = ?", True),
    "groups": ("SELECT count(DISTINCT group_id) FROM samples WHERE batch_id = ?", True),
    "region_sets": ("SELECT count(*) FROM region_sets", False),
    "regions": ("SELECT count(*) FROM regions", False),
    "tasks": ("SELECT count(*) FROM tasks", False),
    "annotators": ("SELECT count(*) FROM annotators", False),
    "simulated_annotators": ("SELECT count(*) FROM annotators WHERE is_simulated", False),
    "annotation_versions": ("SELECT count(*) FROM annotation_versions", False),
    "annotations": ("SELECT count(*) FROM annotations WHERE NOT is_deleted", False),
    "valid_annotations": ("SELECT count(*) FROM annotations WHERE valid AND NOT is_deleted", False),
    "cancelled_annotations": ("SELECT count(*) FROM annotations WHERE was_cancelled", False),
    "annotated_regions": ("SELECT count(*) FROM annotation_regions", False),
}


def stage_counts(wh: Warehouse, batch_id: str) -> dict[str, int]:
    """Rows per stage: samples, quarantined rows and GRPO groups of `batch_id`; region sets,
    regions, tasks, annotators (and simulated ones), synced annotation versions, current
    annotations (valid, cancelled) and annotated regions over the whole warehouse."""
    with wh.read() as con:
        return {name: int(con.execute(sql, [batch_id] if by_batch else []).fetchone()[0])
                for name, (sql, by_batch) in _COUNTS.items()}
