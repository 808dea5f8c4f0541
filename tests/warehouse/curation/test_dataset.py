"""Versioned datasets: content-hash ids, recorded counts, scores on 0..25."""
import json

import numpy as np
import pytest

from warehouse.curation import CurationConfig, build_dataset, get_version, list_versions
from warehouse.db import Warehouse
from warehouse.scale import LABEL_SCALE, REWARD_PER_STAR, stars_to_reward

CFG = dict(dedupe_hamming=-1, fractions=(0.5, 0.25, 0.25))


def test_identical_id_on_rebuild_and_new_id_on_change(curation_ws, annotated_warehouse):
    v1 = build_dataset(curation_ws, CurationConfig(**CFG))
    v2 = build_dataset(curation_ws, CurationConfig(**CFG))
    assert v1.dataset_id == v2.dataset_id and v1.dataset_id.startswith("sfr-")
    wh = Warehouse.open(curation_ws)
    assert wh.query("SELECT count(*) FROM dataset_versions") == [(1,)]
    assert wh.query("SELECT count(*) FROM dataset_rows") == [(v1.n_rows,)]
    # Another config: another id (same rows, config is part of the identity).
    v3 = build_dataset(curation_ws, CurationConfig(**CFG, license="CC0-1.0"))
    assert v3.dataset_id != v1.dataset_id
    # A changed rating changes the rows: another id.
    with wh.write() as con:
        con.execute("UPDATE annotations SET overall = CASE WHEN overall = 5 THEN 1 ELSE 5 END "
                    "WHERE sample_id = (SELECT min(sample_id) FROM samples)")
    v4 = build_dataset(curation_ws, CurationConfig(**CFG))
    assert v4.dataset_id not in (v1.dataset_id, v3.dataset_id)
    assert [v.dataset_id for v in list_versions(curation_ws)][0] in (v1.dataset_id, v3.dataset_id, v4.dataset_id)
    assert len(list_versions(curation_ws)) == 3


def test_version_record_and_scores(curation_ws, annotated_warehouse):
    aw = annotated_warehouse
    v = build_dataset(curation_ws, CurationConfig(**CFG))
    got = get_version(curation_ws, v.dataset_id)
    # Recorded with the split linking resolved (a fresh warehouse gets the perceptual scheme).
    assert got.config == CurationConfig(**CFG, split_linking="perceptual").to_dict()
    assert got.config["label_scale"] == LABEL_SCALE
    assert sum(got.split_counts.values()) == got.n_rows == 24
    assert got.n_regions == 24 * 3                     # tiny context region dropped everywhere
    assert got.exclusion_counts == {"region:small_region": 24}
    assert set(got.agreement["alpha"]) == {"overall", "naturalness", "artifacts", "success", "preserve"}
    assert json.loads((curation_ws.datasets / v.dataset_id / "version.json").read_text())["dataset_id"] == v.dataset_id
    wh = Warehouse.open(curation_ws)
    # Scores are the median of the raw ratings on the reward scale: 1 star = 0, 5 stars = 25.
    sid = aw.sample_ids[3]
    raw = wh.query("SELECT overall FROM annotations WHERE sample_id = ?", [sid])
    row = wh.query_dicts("SELECT * FROM dataset_rows WHERE dataset_id = ? AND sample_id = ?", [v.dataset_id, sid])[0]
    assert row["overall"] == pytest.approx((np.median([r[0] for r in raw]) - 1) * 6.25)
    rid = aw.regions[sid][0]["region_id"]
    raw = [r[0] for r in wh.query("SELECT r.success FROM annotation_regions r JOIN annotations a "
                                  "USING (project_key, ls_annotation_id) WHERE a.sample_id = ? AND r.region_id = ?",
                                  [sid, rid])]
    reg = wh.query_dicts("SELECT * FROM dataset_regions WHERE dataset_id = ? AND sample_id = ? AND region_id = ?",
                         [v.dataset_id, sid, rid])[0]
    assert reg["success"] == pytest.approx(stars_to_reward(np.median(raw)))
    assert reg["success_std"] == pytest.approx(REWARD_PER_STAR * np.std(raw))
    assert reg["n_annotators"] == 3
    kinds = [r[0] for r in wh.query("SELECT kind FROM dataset_regions WHERE dataset_id = ? AND sample_id = ? "
                                    "ORDER BY ord", [v.dataset_id, sid])]
    assert kinds == ["edit", "context", "background"]
    mean_v = build_dataset(curation_ws, CurationConfig(**CFG, score_stat="mean"))
    row = wh.query_dicts("SELECT * FROM dataset_rows WHERE dataset_id = ? AND sample_id = ?",
                         [mean_v.dataset_id, sid])[0]
    assert row["overall"] == pytest.approx(stars_to_reward(np.mean([r[0] for r in wh.query(
        "SELECT overall FROM annotations WHERE sample_id = ?", [sid])])))
    lowest = wh.query("SELECT min(success) FROM dataset_regions WHERE dataset_id = ?", [v.dataset_id])[0][0]
    assert lowest >= 0.0


def test_bad_config_and_unknown_version(curation_ws):
    with pytest.raises(ValueError, match="score_stat"):
        CurationConfig(score_stat="mode")
    with pytest.raises(ValueError, match="fractions"):
        CurationConfig(fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown curation config keys"):
        CurationConfig.from_dict({"sed": 1})
    with pytest.raises(ValueError, match="label_scale"):
        CurationConfig(label_scale="stars1to5-reward5to25-v1")
    with pytest.raises(ValueError, match="split_linking"):
        CurationConfig(split_linking="md5")
    with pytest.raises(KeyError, match="sfr-nope"):
        get_version(curation_ws, "sfr-nope")


def test_label_scale_of_new_and_legacy_versions(curation_ws, annotated_warehouse):
    from warehouse.curation.dataset import label_scale_of
    from warehouse.scale import LEGACY_LABEL_SCALE

    v = build_dataset(curation_ws, CurationConfig(**CFG))
    assert label_scale_of(curation_ws, v.dataset_id) == LABEL_SCALE
    # A version built before label scales were recorded (its config has no label_scale) is legacy.
    wh = Warehouse.open(curation_ws)
    old = {k: val for k, val in v.config.items() if k != "label_scale"}
    with wh.write() as con:
        con.execute("UPDATE dataset_versions SET config = ? WHERE dataset_id = ?", [json.dumps(old), v.dataset_id])
    assert label_scale_of(curation_ws, v.dataset_id) == LEGACY_LABEL_SCALE
    assert label_scale_of(curation_ws, "sfr-nope") is None and label_scale_of(curation_ws, None) is None
