"""Annotators' fixes of prefilled masks reach the dataset (warehouse.curation.consensus)."""
import json

import numpy as np
import pytest

from warehouse import masks
from warehouse.curation import CurationConfig, build_dataset
from warehouse.curation.consensus import consensus_mask
from warehouse.db import Warehouse

CFG = dict(dedupe_hamming=-1, fractions=(0.5, 0.25, 0.25))


def _m(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows])


def test_majority_vote_with_the_proposal_breaking_ties():
    proposal = _m(["##..", "##..", "....", "...."])
    a = _m(["###.", "###.", "....", "...."])       # grows it one column to the right
    b = _m([".#..", ".#..", ".#..", "...."])       # shifts it
    # One annotator: their fix wins outright.
    assert np.array_equal(consensus_mask([a], proposal), a)
    # Two who disagree: where they agree, their answer; where they split, the proposal's.
    assert np.array_equal(consensus_mask([a, b], proposal), _m(["##..", "##..", "....", "...."]))
    # Three: plain majority (the proposal does not vote).
    c = _m(["###.", "###.", "###.", "...."])
    assert np.array_equal(consensus_mask([a, b, c], proposal), _m(["###.", "###.", ".#..", "...."]))
    assert np.array_equal(consensus_mask([], proposal), proposal)
    with pytest.raises(ValueError, match="does not match the proposal"):
        consensus_mask([np.zeros((3, 3), bool)], proposal)


def _region(wh, sample_id):
    """The sample's edit proposal region: (region_id, proposal mask)."""
    rid, rle = wh.query("""SELECT r.region_id, r.rle FROM regions r JOIN tasks t USING (region_set_id)
                           WHERE t.sample_id = ? AND r.kind = 'edit'""", [sample_id])[0]
    return rid, masks.decode(rle)


def _set_masks(wh, sample_id, region_id, per_annotator: list[np.ndarray]):
    """Give the sample's annotators (in annotator order) these final masks for the region."""
    anns = wh.query("""SELECT ar.ls_annotation_id FROM annotation_regions ar JOIN annotations a
                         ON a.project_key = ar.project_key AND a.ls_annotation_id = ar.ls_annotation_id
                       WHERE a.sample_id = ? AND ar.region_id = ? ORDER BY a.annotator_id""", [sample_id, region_id])
    assert len(anns) == len(per_annotator)
    with wh.write() as con:
        for (ann_id,), m in zip(anns, per_annotator):
            x1, y1, x2, y2 = masks.bbox_xyxy(m)
            con.execute("UPDATE annotation_regions SET rle = ?, x1 = ?, y1 = ?, x2 = ?, y2 = ?, area = ? "
                        "WHERE ls_annotation_id = ? AND region_id = ?",
                        [masks.to_json(masks.encode(m)), x1, y1, x2, y2, int(m.sum()), ann_id, region_id])


def test_dataset_publishes_the_annotators_fixed_masks(curation_ws, annotated_warehouse):
    wh = Warehouse.open(curation_ws)
    before = build_dataset(curation_ws, CurationConfig(**CFG))
    assert wh.query("SELECT DISTINCT mask_source FROM dataset_regions WHERE dataset_id = ?",
                    [before.dataset_id]) == [("proposal",)]
    s_fixed, s_minority, s_disjoint = [r[0] for r in wh.query(
        "SELECT sample_id FROM dataset_rows WHERE dataset_id = ? ORDER BY sample_id LIMIT 3", [before.dataset_id])]

    # All three annotators enlarge the edit region the same way.
    rid, prop = _region(wh, s_fixed)
    fixed = prop.copy()
    fixed[:, :40] |= prop.any(axis=1)[:, None]
    _set_masks(wh, s_fixed, rid, [fixed, fixed, fixed])
    # One of three paints extra pixels: the majority keeps the proposal.
    rid_m, prop_m = _region(wh, s_minority)
    extra = prop_m.copy()
    extra[-5:, -5:] = True
    _set_masks(wh, s_minority, rid_m, [extra, prop_m, prop_m])
    # Three disjoint masks: no pixel has a majority -> the region is excluded, with the reason.
    rid_d, _ = _region(wh, s_disjoint)
    parts = [np.zeros_like(prop) for _ in range(3)]
    for i, p in enumerate(parts):
        p[10 * i: 10 * i + 5, 0:5] = True
    _set_masks(wh, s_disjoint, rid_d, parts)

    after = build_dataset(curation_ws, CurationConfig(**CFG))
    assert after.dataset_id != before.dataset_id
    rows = {(s, r): (rle, area, x1, x2, src) for s, r, rle, area, x1, x2, src in wh.query(
        "SELECT sample_id, region_id, rle, area, x1, x2, mask_source FROM dataset_regions WHERE dataset_id = ?",
        [after.dataset_id])}
    rle, area, x1, x2, src = rows[(s_fixed, rid)]
    assert src == "corrected" and np.array_equal(masks.decode(rle), fixed)
    assert area == int(fixed.sum()) > int(prop.sum()) and (x1, x2) == masks.bbox_xyxy(fixed)[0::2]
    rle, area, _, _, src = rows[(s_minority, rid_m)]
    assert src == "proposal" and np.array_equal(masks.decode(rle), prop_m)
    assert (s_disjoint, rid_d) not in rows
    assert wh.query("SELECT reason FROM dataset_exclusions WHERE dataset_id = ? AND item_id = ?",
                    [after.dataset_id, f"{s_disjoint}/{rid_d}"]) == [("empty_consensus_mask",)]
    # Every other region is untouched.
    changed = {(s_fixed, rid), (s_minority, rid_m), (s_disjoint, rid_d)}
    old = {(s, r): (rle, src) for s, r, rle, src in wh.query(
        "SELECT sample_id, region_id, rle, mask_source FROM dataset_regions WHERE dataset_id = ?", [before.dataset_id])}
    assert {k: (v[0], v[4]) for k, v in rows.items() if k not in changed} == \
        {k: v for k, v in old.items() if k not in changed}


def test_hf_export_carries_the_mask_source(curation_ws, annotated_warehouse, hf_cache):
    from datasets import load_dataset

    from warehouse.curation.exports import export_hf

    wh = Warehouse.open(curation_ws)
    v0 = build_dataset(curation_ws, CurationConfig(**CFG))
    sample = wh.query("SELECT min(sample_id) FROM dataset_rows WHERE dataset_id = ?", [v0.dataset_id])[0][0]
    rid, prop = _region(wh, sample)
    fixed = np.zeros_like(prop)
    fixed[5:25, 5:25] = True
    _set_masks(wh, sample, rid, [fixed] * 3)
    v = build_dataset(curation_ws, CurationConfig(**CFG))
    out = export_hf(curation_ws, v.dataset_id)
    ds = load_dataset("parquet", data_files={s: str(p) for s in ("train", "validation", "test")
                                             if (p := out / f"{s}-00000-of-00001.parquet").exists()})
    found = [(r["mask_source"], r["mask"]) for split in ds.values() for row in split if row["sample_id"] == sample
             for r in row["regions"] if r["region_id"] == rid]
    assert len(found) == 1 and found[0][0] == "corrected"
    assert np.array_equal(masks.decode(json.dumps(found[0][1])), fixed)
    sources = {r["mask_source"] for split in ds.values() for row in split for r in row["regions"]}
    assert sources == {"proposal", "corrected"}


def test_an_undecodable_annotator_mask_does_not_vote(curation_ws, annotated_warehouse):
    wh = Warehouse.open(curation_ws)
    sid = annotated_warehouse.sample_ids[0]
    rid, prop = _region(wh, sid)
    fixed = np.zeros_like(prop)
    fixed[2:20, 2:20] = True
    _set_masks(wh, sid, rid, [fixed, fixed, fixed])
    with wh.write() as con:  # one of the three rows is corrupt: the other two decide
        con.execute("UPDATE annotation_regions SET rle = '{\"size\": [64, 64], \"counts\": \"!!\"}' "
                    "WHERE region_id = ? AND ls_annotation_id = (SELECT min(ls_annotation_id) FROM annotation_regions "
                    "WHERE region_id = ?)", [rid, rid])
    v = build_dataset(curation_ws, CurationConfig(**CFG))
    rle, src = wh.query("SELECT rle, mask_source FROM dataset_regions WHERE dataset_id = ? AND sample_id = ? "
                        "AND region_id = ?", [v.dataset_id, sid, rid])[0]
    assert src == "corrected" and np.array_equal(masks.decode(rle), fixed)
