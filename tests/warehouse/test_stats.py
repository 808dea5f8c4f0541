"""Stage counts (warehouse.stats) on a warehouse whose contents the fixture fixes: 24 samples
in 12 GRPO groups alternating between batches b1 and b2, one region set of 4 regions per group,
3 simulated annotators rating every sample."""
from __future__ import annotations

from warehouse.db import Warehouse
from warehouse.stats import stage_counts


def test_stage_counts(curation_ws, annotated_warehouse):
    wh = Warehouse.open(curation_ws)
    with wh.write() as con:
        con.execute("INSERT INTO quarantine (batch_id, row_number, row_text, reason) VALUES ('b1', 7, '{}', 'bad')")
        con.execute("UPDATE annotations SET valid = false WHERE ls_annotation_id = "
                    "(SELECT min(ls_annotation_id) FROM annotations)")
    counts = stage_counts(wh, "b1")
    assert counts == {
        "samples": 12, "quarantined": 1, "groups": 12, "region_sets": 12, "regions": 48, "tasks": 24,
        "annotators": 3, "simulated_annotators": 3, "annotation_versions": 0, "annotations": 72,
        "valid_annotations": 71, "cancelled_annotations": 0, "annotated_regions": 288}
    assert stage_counts(wh, "no-such-batch")["samples"] == 0
