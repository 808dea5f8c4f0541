"""Aggregation in SQL: planted ratings with ties, missing values, skipped / invalid / deleted /
superseded annotations, drawn regions; expected values computed with numpy from the plants."""
import numpy as np
import pytest

from tests.fixtures.curation import PROJECT, make_annotated_warehouse
from warehouse.curation.aggregate import aggregate
from warehouse.db import Warehouse


@pytest.fixture
def planted(curation_ws):
    aw = make_annotated_warehouse(curation_ws, n_samples=2, n_annotators=3, noise=0.0, seed=0, n_gold=0)
    wh = Warehouse.open(curation_ws)
    s0, s1 = aw.sample_ids
    r_edit = aw.regions[s0][0]["region_id"]
    with wh.write() as con:
        ids = [r[0] for r in con.execute("SELECT ls_annotation_id FROM annotations WHERE sample_id = ? "
                                         "ORDER BY annotator_id", [s0]).fetchall()]
        # Image level on s0: overall 2, 2, 5; naturalness 3, 4, missing.
        for ann, ov, nat in zip(ids, (2, 2, 5), (3, 4, None)):
            con.execute("UPDATE annotations SET overall = ?, naturalness = ? WHERE ls_annotation_id = ?", [ov, nat, ann])
        # Edit region on s0: success 3, 4, missing (tie -> median 3.5); verdicts artifact, fine, NULL.
        for ann, succ, verdict in zip(ids, (3, 4, None), ("fine", "artifact", None)):
            con.execute("UPDATE annotation_regions SET success = ?, verdict = ? WHERE ls_annotation_id = ? "
                        "AND region_id = ?", [succ, verdict, ann, r_edit])
        # An invalid region rating must not count.
        con.execute("UPDATE annotation_regions SET valid = false, preserve = 1 WHERE ls_annotation_id = ? "
                    "AND region_id = ?", [ids[2], r_edit])
        # s1: first annotator skipped, second invalid, third superseded by a newer annotation
        # (same annotator) with overall 1, plus a deleted annotation that must be ignored.
        ids1 = [r[0] for r in con.execute("SELECT ls_annotation_id FROM annotations WHERE sample_id = ? "
                                          "ORDER BY annotator_id", [s1]).fetchall()]
        con.execute("UPDATE annotations SET was_cancelled = true WHERE ls_annotation_id = ?", [ids1[0]])
        con.execute("UPDATE annotations SET valid = false, invalid_reason = 'x' WHERE ls_annotation_id = ?", [ids1[1]])
        con.execute("UPDATE annotations SET updated_at = now() - INTERVAL 1 DAY WHERE ls_annotation_id = ?", [ids1[2]])
        third = aw.annotators[2]
        for new_id, deleted in ((9001, False), (9002, True)):
            con.execute("INSERT INTO annotations (ls_annotation_id, project_key, task_key, sample_id, annotator_id, "
                        "version, updated_at, is_deleted, valid, overall, naturalness, artifacts) "
                        "VALUES (?, ?, ?, ?, ?, 1, now(), ?, true, 1, 1, 1)",
                        [new_id, PROJECT, f"{PROJECT}:{s1}", s1, third if not deleted else "ls:99@test", deleted])
        # A region drawn by the annotator on the newer annotation (no proposal region).
        con.execute("INSERT INTO annotation_regions (project_key, ls_annotation_id, region_key, region_id, kind, rle, "
                    "x1, y1, x2, y2, area, success, preserve, verdict, valid) VALUES "
                    "(?, 9001, 'd1', NULL, 'edit', '{\"size\":[64,64],\"counts\":\"0\"}', 0, 0, 1, 1, 1, 2, 5, "
                    "'missed_edit', true)", [PROJECT])
    aggregate(curation_ws)
    return aw, wh, s0, s1, r_edit


def test_image_level_ties_and_missing(planted):
    aw, wh, s0, s1, _ = planted
    row = wh.query_dicts("SELECT * FROM agg_samples WHERE sample_id = ?", [s0])[0]
    overall = np.array([2, 2, 5])
    assert row["n_annotators"] == 3 and row["n_complete"] == 2      # one naturalness missing
    assert row["overall_mean"] == pytest.approx(overall.mean())
    assert row["overall_median"] == pytest.approx(np.median(overall))
    assert row["overall_std"] == pytest.approx(overall.std())       # population std
    nat = np.array([3, 4])
    assert row["naturalness_median"] == pytest.approx(np.median(nat)) == 3.5  # tie interpolates
    assert row["naturalness_std"] == pytest.approx(nat.std())


def test_region_ties_missing_invalid_and_verdict(planted):
    aw, wh, s0, _, r_edit = planted
    row = wh.query_dicts("SELECT * FROM agg_regions WHERE sample_id = ? AND region_id = ?", [s0, r_edit])[0]
    assert row["n_annotators"] == 2        # the invalid region rating is not counted
    assert row["success_n"] == 2 and row["success_median"] == pytest.approx(3.5)
    assert row["success_std"] == pytest.approx(0.5)
    truth = aw.truth_region[(s0, r_edit)]["preserve"]                  # noise 0: both say the truth
    assert row["preserve_n"] == 2 and row["preserve_mean"] == pytest.approx(truth)
    assert row["verdict"] == "artifact"    # tie between 'artifact' and 'fine': alphabetical
    # Every other region of s0 still has all three annotators.
    others = wh.query("SELECT min(n_annotators), max(n_annotators) FROM agg_regions WHERE sample_id = ? "
                      "AND region_id <> ?", [s0, r_edit])
    assert others == [(3, 3)]


def test_skipped_invalid_deleted_superseded(planted):
    aw, wh, _, s1, _ = planted
    row = wh.query_dicts("SELECT * FROM agg_samples WHERE sample_id = ?", [s1])[0]
    assert (row["n_annotations"], row["n_skipped"], row["n_invalid"], row["n_annotators"]) == (3, 1, 1, 1)
    assert row["overall_mean"] == 1.0 and row["overall_std"] == 0.0   # only the newer annotation
    drawn = wh.query_dicts("SELECT * FROM agg_regions WHERE sample_id = ? AND is_drawn", [s1])
    assert [(d["region_id"], d["success_mean"], d["preserve_mean"], d["verdict"]) for d in drawn] == \
        [(f"drawn:{PROJECT}:9001:d1", 2.0, 5.0, "missed_edit")]
    # The superseded annotation's proposal-region ratings are gone: only the newer one counts, and
    # it rated no proposal region.
    assert wh.query("SELECT count(*) FROM agg_regions WHERE sample_id = ? AND NOT is_drawn", [s1]) == [(0,)]
