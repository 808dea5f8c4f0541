"""Annotation reads (annotation.store) on the curation fixture: 24 samples x 3 annotators."""
from __future__ import annotations

from annotation.store import projects, validity_counts
from warehouse.db import Warehouse


def test_projects_and_validity_counts(curation_ws, annotated_warehouse):
    wh = Warehouse.open(curation_ws)
    with wh.write() as con:
        con.execute("INSERT INTO ls_projects (project_key, ls_project_id, base_url, label_config_hash) "
                    "VALUES ('zeta', 9, 'http://x', 'h'), ('alpha', 4, 'http://x', 'h')")
        ids = [r[0] for r in con.execute("SELECT ls_annotation_id FROM annotations ORDER BY 1 LIMIT 3").fetchall()]
        con.execute("UPDATE annotations SET valid = false WHERE ls_annotation_id IN (?, ?)", ids[:2])
        con.execute("UPDATE annotations SET was_cancelled = true WHERE ls_annotation_id = ?", [ids[0]])
        con.execute("UPDATE annotations SET is_deleted = true WHERE ls_annotation_id = ?", [ids[2]])
    assert projects(wh) == [("alpha", 4), ("zeta", 9)]
    assert validity_counts(wh) == (71, 2)
    assert validity_counts(wh, include_cancelled=False) == (70, 1)
