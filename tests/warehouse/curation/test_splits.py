"""Leakage-free, stratified, deterministic and stable splits."""
import collections

import pytest

from tests.fixtures.curation import make_annotated_warehouse
from warehouse.curation import CurationConfig, build_dataset
from warehouse.curation.checks import check_no_leakage
from warehouse.db import Warehouse
from warehouse.workspace import Workspace

CFG = dict(dedupe_hamming=-1, fractions=(0.5, 0.25, 0.25))


def _splits(ws, dataset_id) -> dict[str, str]:
    return dict(Warehouse.open(ws).query("SELECT sample_id, split FROM dataset_rows WHERE dataset_id = ?",
                                         [dataset_id]))


def test_no_leak_and_planted_leak_fails(curation_ws, annotated_warehouse):
    v = build_dataset(curation_ws, CurationConfig(**CFG))
    ok, details = check_no_leakage(curation_ws, v.dataset_id)
    assert ok and details["n_leaks"] == 0
    assert all(v.split_counts[s] > 0 for s in ("train", "validation", "test"))
    wh = Warehouse.open(curation_ws)
    # Plant a leak: move one rollout of a two-sample group to another split.
    sample_id, split, group_id = wh.query(
        "SELECT sample_id, split, group_id FROM dataset_rows WHERE dataset_id = ? ORDER BY sample_id LIMIT 1",
        [v.dataset_id])[0]
    other = "test" if split != "test" else "train"
    with wh.write() as con:
        con.execute("UPDATE dataset_rows SET split = ? WHERE dataset_id = ? AND sample_id = ?",
                    [other, v.dataset_id, sample_id])
    ok, details = check_no_leakage(curation_ws, v.dataset_id)
    assert not ok
    assert {"kind": "group", "key": group_id, "splits": sorted([split, other])} in details["leaks"]


def test_groups_and_shared_sources_stay_together(curation_ws, annotated_warehouse):
    wh = Warehouse.open(curation_ws)
    # Two groups on the same source image: a sample of group B now uses group A's source.
    (ga, src_a), (gb,) = wh.query("SELECT group_id, source_sha256 FROM groups ORDER BY group_id LIMIT 1")[0:1][0], \
        wh.query("SELECT group_id FROM groups ORDER BY group_id LIMIT 1 OFFSET 5")[0]
    with wh.write() as con:
        con.execute("UPDATE samples SET source_sha256 = ? WHERE group_id = ?", [src_a, gb])
    v = build_dataset(curation_ws, CurationConfig(**CFG))
    rows = wh.query_dicts("SELECT group_id, split FROM dataset_rows WHERE dataset_id = ? AND group_id IN (?, ?)",
                          [v.dataset_id, ga, gb])
    assert len(rows) == 4 and len({r["split"] for r in rows}) == 1
    assert check_no_leakage(curation_ws, v.dataset_id)[0]


def test_deterministic_from_seed(tmp_path):
    ids, splits = [], []
    for i in range(2):
        ws = Workspace.open(tmp_path / f"h{i}")
        make_annotated_warehouse(ws, n_samples=24, n_annotators=2, noise=0.3, seed=5)
        v = build_dataset(ws, CurationConfig(**CFG))
        ids.append(v.dataset_id)
        splits.append(_splits(ws, v.dataset_id))
    assert ids[0] == ids[1] and splits[0] == splits[1]
    # Another seed, same warehouse: a different (still leak-free) split.
    v2 = build_dataset(ws, CurationConfig(**(CFG | {"seed": 1})))
    assert _splits(ws, v2.dataset_id) != splits[1]
    assert check_no_leakage(ws, v2.dataset_id)[0]


def test_stable_when_rows_are_added(curation_ws, annotated_warehouse):
    v1 = build_dataset(curation_ws, CurationConfig(**CFG))
    before = _splits(curation_ws, v1.dataset_id)
    wh = Warehouse.open(curation_ws)
    # New samples: fresh groups, one rollout reusing an existing source (must inherit its split),
    # and one bridging two existing groups that sit in different splits (must be excluded).
    make_annotated_warehouse(curation_ws, n_samples=20, n_annotators=3, noise=0.4, seed=9, id_prefix="t", n_gold=0)
    by_split = collections.defaultdict(list)
    for sid, split in sorted(before.items()):
        by_split[split].append(sid)
    train_s, test_s = by_split["train"][0], by_split["test"][0]
    with wh.write() as con:
        src_train = con.execute("SELECT source_sha256 FROM samples WHERE sample_id = ?", [train_s]).fetchone()[0]
        grp_test = con.execute("SELECT group_id FROM samples WHERE sample_id = ?", [test_s]).fetchone()[0]
        con.execute("UPDATE samples SET source_sha256 = ? WHERE sample_id = 't00000'", [src_train])
        con.execute("UPDATE samples SET source_sha256 = ?, group_id = ? WHERE sample_id = 't00002'",
                    [src_train, grp_test])
        # t00004 inherits train through its source, t00006 test through its group, and both share
        # a new edited image: putting each in its own split would leak. Added in sample_id order,
        # t00004 takes train (and the shared image with it); t00006 would then bridge: out.
        con.execute("UPDATE samples SET source_sha256 = ? WHERE sample_id = 't00004'", [src_train])
        con.execute("UPDATE samples SET group_id = ?, edited_sha256 = (SELECT edited_sha256 FROM samples "
                    "WHERE sample_id = 't00004') WHERE sample_id = 't00006'", [grp_test])
    v2 = build_dataset(curation_ws, CurationConfig(**CFG))
    after = _splits(curation_ws, v2.dataset_id)
    assert v2.dataset_id != v1.dataset_id
    assert {s: after[s] for s in before} == before            # nobody moved
    assert after["t00000"] == "train"
    assert "t00002" not in after
    excl = wh.query("SELECT item_id, reason FROM dataset_exclusions WHERE dataset_id = ? AND reason = 'split_conflict'",
                    [v2.dataset_id])
    # t00001 shares t00000's group: it follows to train once the bridge is out.
    assert after["t00001"] == "train"
    assert {("t00002", "split_conflict"), ("t00006", "split_conflict")} == set(excl)
    assert after["t00004"] == "train"
    assert check_no_leakage(curation_ws, v2.dataset_id)[0]


def test_stratified_by_category(curation_ws):
    make_annotated_warehouse(curation_ws, n_samples=60, n_annotators=2, noise=0.3, seed=2, group_size=1, n_gold=0)
    v = build_dataset(curation_ws, CurationConfig(dedupe_hamming=-1, fractions=(0.6, 0.2, 0.2), max_item_std=5))
    rows = Warehouse.open(curation_ws).query(
        "SELECT category, split, count(*) FROM dataset_rows WHERE dataset_id = ? GROUP BY ALL", [v.dataset_id])
    counts = collections.defaultdict(dict)
    for cat, split, n in rows:
        counts[cat][split] = n
    assert len(counts) == 3
    for cat, c in counts.items():
        total = sum(c.values())
        for split, frac in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
            assert abs(c.get(split, 0) - frac * total) <= 1, (cat, c)
