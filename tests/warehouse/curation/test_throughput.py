"""Per-annotator throughput: lead time, tasks per hour, explicit vs default ratings, and the
agreement / gold accuracy of the agreement report, on a real annotated warehouse."""
from __future__ import annotations

import pytest

from tests.fixtures.curation import make_annotated_warehouse
from warehouse.curation import CurationConfig, build_dataset
from warehouse.curation.throughput import annotator_throughput, throughput_markdown
from warehouse.db import Warehouse


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    from warehouse.workspace import Workspace

    ws = Workspace.open(tmp_path_factory.mktemp("tp") / "home")
    make_annotated_warehouse(ws, n_samples=12, n_annotators=3, noise=0.4, seed=0)
    wh = Warehouse.open(ws)
    with wh.write() as con:
        anns = con.execute("SELECT ls_annotation_id, project_key, task_key, annotator_id FROM annotations "
                           "ORDER BY ls_annotation_id").fetchall()
        ids = sorted({a[3] for a in anns})
        # Annotator k spends 20 * (k + 1) s per task; annotator 0 left every preserve to a default.
        con.executemany("INSERT INTO annotation_versions (ls_annotation_id, project_key, version, task_key, "
                        "annotator_id, lead_time, result) VALUES (?, ?, 1, ?, ?, ?, '[]')",
                        [(a, p, t, u, 20.0 * (ids.index(u) + 1)) for a, p, t, u in anns])
        con.execute("UPDATE annotation_regions SET preserve_default = true WHERE ls_annotation_id IN "
                    "(SELECT ls_annotation_id FROM annotations WHERE annotator_id = ?)", [ids[0]])
    build_dataset(ws, CurationConfig())
    return wh, ids


def test_throughput_per_annotator(warehouse):
    wh, ids = warehouse
    rows = {r["annotator_id"]: r for r in annotator_throughput(wh)}
    assert set(rows) == set(ids)
    for k, aid in enumerate(ids):
        r = rows[aid]
        assert r["n_annotations"] == 12 and r["n_skipped"] == 0
        assert r["median_lead_time_s"] == 20.0 * (k + 1)
        assert r["tasks_per_hour"] == pytest.approx(3600 / (20.0 * (k + 1)), abs=0.05)
    # Explicit share: annotator 0's preserve ratings are all defaults.
    n_s, n_p = wh.query("SELECT count(success), count(preserve) FROM annotation_regions ar JOIN annotations a "
                        "USING (project_key, ls_annotation_id) WHERE a.annotator_id = ?", [ids[0]])[0]
    assert rows[ids[0]]["explicit_share"] == pytest.approx(n_s / (n_s + n_p), abs=1e-3)
    assert rows[ids[1]]["explicit_share"] == 1.0
    # Agreement and gold come from the newest agreement report, unchanged.
    q = {r[0]: r[1:] for r in wh.query("SELECT annotator_id, mae_vs_others, n_gold, mae_vs_gold "
                                       "FROM annotator_quality")}
    for aid in ids:
        mae, n_gold, gold = q[aid]
        assert rows[aid]["mae_vs_others"] == pytest.approx(mae, abs=1e-3)
        assert rows[aid]["n_gold"] == n_gold and n_gold > 0
        assert rows[aid]["mae_vs_gold"] == pytest.approx(gold, abs=1e-3)
    md = throughput_markdown(list(rows.values()))
    assert len(md) == 2 + len(ids) and "tasks / hour" in md[0]
