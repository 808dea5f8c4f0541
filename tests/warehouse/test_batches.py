"""Batch reads (warehouse.batches) on the curation fixture: batches b1 and b2, samples
s00000.. alternating between them."""
from __future__ import annotations

from warehouse.batches import batch_ids, batch_source, batches_of_samples, batches_without_valid_samples
from warehouse.db import Warehouse


def test_batch_reads(curation_ws, annotated_warehouse):
    wh = Warehouse.open(curation_ws)
    with wh.write() as con:
        con.execute("UPDATE batches SET n_rows = 3, n_ingested = 0, n_duplicates = 0 WHERE batch_id = 'b2'")
        con.execute("UPDATE batches SET n_rows = 3, n_ingested = 1, n_duplicates = 0 WHERE batch_id = 'b1'")
        con.execute("INSERT INTO batches (batch_id, source_uri, source_kind, n_rows) VALUES ('b3', '/x/m.jsonl', "
                    "'jsonl', 0)")
    assert sorted(batch_ids(wh)) == ["b1", "b2", "b3"] and batch_ids(wh)[-1] == "b3"
    assert batch_source(wh, "b3") == "/x/m.jsonl" and batch_source(wh, "nope") is None
    assert batches_without_valid_samples(wh) == ["b2"]          # b3 had no rows: not a failure
    assert batches_of_samples(wh, ["s00000", "s00001", "s00002"]) == {"b1", "b2"}
    assert batches_of_samples(wh, ["s00000"]) == {"b1"}
