"""Group-consistent region sets in a real DuckDB warehouse: reuse, idempotence, bad items."""
import dataclasses

import numpy as np
import pytest

from sfreward.regions import ProposerConfig, RegionsNotFound, load_regions, propose_for_batch, propose_for_groups
from sfreward.regions.group import groups_of_batch
from sfreward.regions.store import region_set_for_sample
from tests.fixtures.regions import add_samples, iou
from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore


def test_batch_proposals_are_group_consistent_and_idempotent(regions_batch):
    ws = regions_batch["ws"]
    cfg = ProposerConfig(max_regions=6)
    summary = propose_for_batch(ws, "b1", cfg)
    assert (summary["n_groups"], summary["n_proposed"], summary["n_failed"]) == (2, 2, 0)
    assert summary["proposer"] == "classical"
    wh = Warehouse.open(ws)
    assert wh.query("SELECT count(*) FROM region_sets") == [(2,)]
    # Every rollout of the astro group reads back the same regions (one set per group).
    s0, s1, s2 = regions_batch["samples"]["astro"]
    r0, r1, r2 = (load_regions(ws, s) for s in (s0, s1, s2))
    assert [r.region_id for r in r0] == [r.region_id for r in r1] == [r.region_id for r in r2]
    # Masks survive the RLE round trip and cover the image with the background.
    union = np.zeros((128, 128), bool)
    for r in r0[:-1]:
        union |= r.mask
        assert r.area == int(r.mask.sum())
    np.testing.assert_array_equal(r0[-1].mask, ~union)
    # The union of the group's changes: both edited areas are edit regions.
    truth = regions_batch["truth"]["astro"]
    edit_union = np.logical_or.reduce([r.mask for r in r0 if r.kind == "edit"])
    assert iou(edit_union, truth) >= 0.6
    n_regions = wh.query("SELECT count(*) FROM regions")[0][0]
    # Rerun with the same config: a no-op.
    again = propose_for_batch(ws, "b1", cfg)
    assert (again["n_existing"], again["n_proposed"]) == (2, 0)
    assert wh.query("SELECT count(*) FROM regions")[0][0] == n_regions
    # A new config adds a new set; without a hash load_regions returns the newest.
    cfg2 = dataclasses.replace(cfg, max_regions=3)
    assert propose_for_batch(ws, "b1", cfg2)["n_proposed"] == 2
    assert wh.query("SELECT count(*) FROM region_sets") == [(4,)]
    assert len(load_regions(ws, s0)) <= 4
    assert [r.region_id for r in load_regions(ws, s0, cfg.config_hash())] == [r.region_id for r in r0]
    row = wh.query_dicts("SELECT * FROM region_sets WHERE region_set_id = ?",
                         [region_set_for_sample(wh, s0, cfg.config_hash())])[0]
    assert (row["proposer"], row["height"], row["width"], row["n_regions"]) == ("classical", 128, 128, len(r0))
    assert row["image_sha256"] == wh.query("SELECT source_sha256 FROM samples WHERE sample_id = ?", [s0])[0][0]


def test_tiny_sam_through_the_warehouse(regions_batch, tiny_sam_config):
    ws = regions_batch["ws"]
    summary = propose_for_groups(ws, ["coffee"], tiny_sam_config)
    assert summary["n_proposed"] == 1 and summary["proposer"] == "sam:tiny"
    regions = load_regions(ws, regions_batch["samples"]["coffee"][0])
    assert regions[-1].kind == "background" and {r.proposer for r in regions} == {"sam:tiny"}
    assert any(r.kind == "edit" for r in regions)


def test_one_bad_group_does_not_stop_the_batch(regions_batch):
    ws = regions_batch["ws"]
    wh = Warehouse.open(ws)
    # Delete the coffee source image from the store: that group fails, astro still works.
    coffee_src = wh.query("SELECT source_sha256 FROM samples WHERE group_id = 'coffee'")[0][0]
    LocalImageStore(ws).local_path(coffee_src).unlink()
    # And one unreadable rollout in astro: dropped from the union, the group still proposes.
    astro_ed = wh.query("SELECT edited_sha256 FROM samples WHERE sample_id = 'astro-s2'")[0][0]
    LocalImageStore(ws).local_path(astro_ed).write_bytes(b"not a png")
    summary = propose_for_batch(ws, "b1", ProposerConfig())
    assert (summary["n_proposed"], summary["n_failed"]) == (1, 1)
    assert summary["failures"][0]["group_id"] == "coffee"
    assert coffee_src in summary["failures"][0]["error"]
    assert [s["sample_id"] for s in summary["skipped_samples"]] == ["astro-s2"]
    with pytest.raises(RegionsNotFound, match="no region set for sample 'coffee-s0'"):
        load_regions(ws, "coffee-s0")


def test_group_with_two_sources_is_rejected(workspace):
    from tests.fixtures.core import photo
    a, b = photo("astronaut", 64), photo("coffee", 64)
    add_samples(workspace, "bx", {"g": (a, [b])})
    add_samples(workspace, "bx2", {"g2": (b, [a])})
    with Warehouse.open(workspace).write() as con:
        con.execute("UPDATE samples SET group_id = 'g' WHERE group_id = 'g2'")
    summary = propose_for_groups(workspace, ["g"], ProposerConfig())
    assert summary["n_failed"] == 1 and "2 different source images" in summary["failures"][0]["error"]


def test_unknown_batch_and_sample(workspace):
    with pytest.raises(LookupError, match="batch 'nope' is not in the warehouse"):
        groups_of_batch(workspace, "nope")
    with pytest.raises(RegionsNotFound, match="sample 'ghost' is not in the warehouse"):
        load_regions(workspace, "ghost")
