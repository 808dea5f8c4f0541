"""Krippendorff's alpha (ordinal) against the `krippendorff` package and a published example;
per-scope alphas from the warehouse; annotator quality against gold and the others."""
import krippendorff
import numpy as np
import pandas as pd
import pytest

from tests.fixtures.curation import make_annotated_warehouse
from warehouse.curation import CurationConfig, build_dataset
from warehouse.curation.agreement import krippendorff_alpha_ordinal
from warehouse.db import Warehouse

DOMAIN = [1, 2, 3, 4, 5]


def _package(data: np.ndarray) -> float:
    return krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=DOMAIN)


@pytest.mark.parametrize("seed", range(8))
def test_alpha_matches_package_on_random_data_with_missing(seed):
    rng = np.random.default_rng(seed)
    raters, units = rng.integers(2, 7), rng.integers(5, 60)
    truth = rng.integers(1, 6, units)
    data = np.clip(truth + rng.integers(-1, 2, (raters, units)) * (rng.random((raters, units)) < 0.5), 1, 5)
    data = data.astype(float)
    data[rng.random(data.shape) < 0.3] = np.nan
    assert krippendorff_alpha_ordinal(data) == pytest.approx(_package(data), abs=1e-9)


def test_alpha_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 observers x 12 units:
    # ordinal alpha = 0.815.
    nan = np.nan
    data = np.array([
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ])
    a = krippendorff_alpha_ordinal(data)
    assert round(a, 3) == 0.815
    assert a == pytest.approx(_package(data), abs=1e-9)


def test_alpha_perfect_and_undefined():
    assert krippendorff_alpha_ordinal(np.array([[1, 2, 3, 5.0], [1, 2, 3, 5.0]])) == pytest.approx(1.0)
    assert np.isnan(krippendorff_alpha_ordinal(np.array([[3, 3, 3.0], [3, 3, 3.0]])))  # no variation
    with pytest.raises(ValueError, match="outside the domain"):
        krippendorff_alpha_ordinal(np.array([[1, 7.0], [1, 2.0]]))


def _raw_ratings(ws) -> pd.DataFrame:
    """All valid current ratings in long form, straight from the annotation tables."""
    wh = Warehouse.open(ws)
    img = wh.query_dicts("""SELECT a.project_key, s.batch_id, a.sample_id, '' AS region_id, a.annotator_id,
                                   a.overall, a.naturalness, a.artifacts
                            FROM annotations a JOIN samples s USING (sample_id)""")
    reg = wh.query_dicts("""SELECT a.project_key, s.batch_id, a.sample_id, r.region_id, a.annotator_id,
                                   r.success, r.preserve
                            FROM annotations a JOIN samples s USING (sample_id)
                            JOIN annotation_regions r USING (project_key, ls_annotation_id)""")
    long = []
    for rows, dims in ((img, ("overall", "naturalness", "artifacts")), (reg, ("success", "preserve"))):
        df = pd.DataFrame(rows)
        for d in dims:
            long.append(df.assign(dimension=d, value=df[d])[["project_key", "batch_id", "sample_id", "region_id",
                                                               "annotator_id", "dimension", "value"]])
    return pd.concat(long)


def test_warehouse_alphas_per_scope_match_package(curation_ws):
    make_annotated_warehouse(curation_ws, n_samples=16, n_annotators=3, noise=0.8, seed=3)
    version = build_dataset(curation_ws, CurationConfig(dedupe_hamming=-1))
    wh = Warehouse.open(curation_ws)
    report = wh.query_dicts("SELECT * FROM agreement_reports WHERE report_id = ?", [version.agreement_report_id])
    assert {(r["scope"], r["dimension"]) for r in report} >= {("all", "overall"), ("batch", "success"),
                                                             ("project", "preserve")}
    raw = _raw_ratings(curation_ws)
    for r in report:
        sel = raw[raw.dimension == r["dimension"]]
        if r["scope"] == "batch":
            sel = sel[sel.batch_id == r["scope_key"]]
        elif r["scope"] == "project":
            sel = sel[sel.project_key == r["scope_key"]]
        matrix = sel.pivot_table(index="annotator_id", columns=["sample_id", "region_id"], values="value",
                                 aggfunc="first").to_numpy(dtype=float)
        assert r["alpha"] == pytest.approx(_package(matrix), abs=1e-9), (r["scope"], r["scope_key"], r["dimension"])
    assert len([r for r in report if r["scope"] == "batch"]) == 2 * 5


def test_random_annotator_is_flagged_by_gold_and_others(curation_ws):
    aw = make_annotated_warehouse(curation_ws, n_samples=20, n_annotators=4, noise=0.3, seed=1, n_gold=6, n_bad=1)
    cfg = CurationConfig(dedupe_hamming=-1, exclude_flagged_annotators=True)
    version = build_dataset(curation_ws, cfg)
    wh = Warehouse.open(curation_ws)
    q = {r["annotator_id"]: r for r in wh.query_dicts(
        "SELECT * FROM annotator_quality WHERE report_id = ?", [version.agreement_report_id])}
    bad = aw.bad_annotators[0]
    good = [a for a in aw.annotators if a != bad]
    assert version.agreement["flagged_annotators"] == [bad]
    assert q[bad]["flagged"] and "gold" in q[bad]["flag_reason"]
    assert all(q[a]["within1_gold"] > q[bad]["within1_gold"] for a in good)
    assert all(q[a]["mae_vs_others"] < q[bad]["mae_vs_others"] for a in good)
    assert q[bad]["n_gold"] == 6 * (3 + 4 * 2)  # 3 image dims + 4 regions x 2 dims per gold sample
    # Excluded from aggregation: every sample now counts 3 annotators, and the exclusion is recorded.
    assert version.exclusion_counts["annotator:flagged_annotator"] == 1
    assert {r[0] for r in wh.query("SELECT DISTINCT n_annotators FROM dataset_rows WHERE dataset_id = ?",
                                   [version.dataset_id])} == {3}


def test_record_gold_validates(curation_ws, annotated_warehouse):
    from warehouse.curation.gold import record_gold

    sid = annotated_warehouse.sample_ids[-1]
    rid = annotated_warehouse.regions[sid][0]["region_id"]
    assert record_gold(curation_ws, sid, {"overall": 4}, {rid: {"success": 5, "preserve": 2}}) == 3
    rows = Warehouse.open(curation_ws).query(
        "SELECT region_id, dimension, rating FROM gold_answers WHERE sample_id = ? ORDER BY ALL", [sid])
    assert rows == [("", "overall", 4), (rid, "preserve", 2), (rid, "success", 5)]
    with pytest.raises(ValueError, match="rating must be an integer 1..5"):
        record_gold(curation_ws, sid, {"overall": 6})
    with pytest.raises(ValueError, match="dimension must be one of"):
        record_gold(curation_ws, sid, {"success": 3})
    with pytest.raises(ValueError, match="unknown sample"):
        record_gold(curation_ws, "nope", {"overall": 3})


def test_gold_template_filled_in_is_stored_all_or_nothing(curation_ws, annotated_warehouse):
    from warehouse.curation.gold import gold_template, record_gold_many

    a, b = annotated_warehouse.sample_ids[-2:]
    tpl = gold_template(curation_ws, [a, b])
    regions_a = [r["region_id"] for r in annotated_warehouse.regions[a]]
    assert list(tpl[a]["regions"]) == regions_a
    assert tpl[a]["image"] == {"overall": None, "naturalness": None, "artifacts": None}
    bg = [r["region_id"] for r in annotated_warehouse.regions[a] if r["kind"] == "background"][0]
    assert tpl[a]["regions"][bg] == {"preserve": None}   # no success rating on the background
    wh = Warehouse.open(curation_ws)
    before = wh.query("SELECT count(*) FROM gold_answers")[0][0]
    tpl[a]["image"]["overall"] = 4
    tpl[a]["regions"][regions_a[0]]["success"] = 5
    tpl[b]["regions"]["no-such-region"] = {"preserve": 3}
    with pytest.raises(ValueError, match="no region 'no-such-region' in the tasks of sample"):
        record_gold_many(curation_ws, tpl)
    assert wh.query("SELECT count(*) FROM gold_answers")[0][0] == before   # nothing stored
    del tpl[b]["regions"]["no-such-region"]
    assert record_gold_many(curation_ws, tpl) == 2                          # nulls skipped
    assert wh.query("SELECT region_id, dimension, rating FROM gold_answers WHERE sample_id = ? ORDER BY ALL",
                    [a]) == [("", "overall", 4), (regions_a[0], "success", 5)]
    with pytest.raises(ValueError, match="no pushed task with regions for samples: 'nope'"):
        gold_template(curation_ws, ["nope"])
