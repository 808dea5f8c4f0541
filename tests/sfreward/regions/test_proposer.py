"""Post-processing rules, and edit-guided proposals end to end with the tiny SAM and the
classical proposer on real photos with known edits."""
import dataclasses

import numpy as np
import pytest

from sfreward.regions import ProposalError, ProposerConfig, propose_group, propose_sample
from sfreward.regions.base import Candidate
from sfreward.regions.proposer import postprocess
from tests.fixtures.core import photo
from tests.fixtures.regions import disk_edit, iou, paste_edit


def box_mask(shape, x1, y1, x2, y2):
    m = np.zeros(shape, bool)
    m[y1:y2, x1:x2] = True
    return m


def check_partition(regions, shape):
    """Invariants of every region set: background last and exactly once, equal to the
    complement of the union, so regions + background cover every pixel."""
    assert [r.kind for r in regions].count("background") == 1 and regions[-1].kind == "background"
    union = np.zeros(shape, bool)
    for r in regions[:-1]:
        assert r.mask.shape == shape and r.area == int(r.mask.sum()) > 0
        x1, y1, x2, y2 = r.bbox
        assert r.mask[y1:y2, x1:x2].sum() == r.area
        union |= r.mask
    np.testing.assert_array_equal(regions[-1].mask, ~union)
    assert (union | regions[-1].mask).all()


def test_nms_min_area_cap_and_background():
    shape = (100, 100)
    cfg = ProposerConfig(min_area_frac=0.01, nms_iou=0.7, max_regions=3)
    cands = [
        Candidate("context", box_mask(shape, 0, 0, 50, 50), "source", 0.9),
        Candidate("context", box_mask(shape, 0, 0, 50, 48), "source", 0.8),   # IoU 0.96: duplicate
        Candidate("context", box_mask(shape, 60, 60, 65, 65), "source", 0.99),  # 25 px < 100: tiny
        Candidate("context", box_mask(shape, 50, 0, 100, 50), "source", 0.5),
        Candidate("context", box_mask(shape, 0, 50, 50, 100), "source", 0.4),
        Candidate("edit", box_mask(shape, 40, 40, 70, 70), "edited", 0.1),
    ]
    regions = postprocess(cands, shape, box_mask(shape, 40, 40, 70, 70), cfg)
    kinds = [(r.kind, r.bbox) for r in regions]
    # Edit first despite its low score; the duplicate and the tiny one are gone; cap = 3.
    assert kinds == [("edit", (40, 40, 70, 70)), ("context", (0, 0, 50, 50)),
                     ("context", (50, 0, 100, 50)), ("background", (0, 50, 100, 100))]
    assert regions[0].change_fraction == 1.0 and regions[1].change_fraction == pytest.approx(100 / 2500)
    check_partition(regions, shape)


def test_same_object_on_source_and_edited_is_one_region_marked_both():
    shape = (64, 64)
    cands = [Candidate("edit", box_mask(shape, 10, 10, 40, 40), "source", 2.0),
             Candidate("edit", box_mask(shape, 10, 10, 40, 41), "edited", 1.0)]
    regions = postprocess(cands, shape, None, ProposerConfig())
    assert [(r.kind, r.proposed_on) for r in regions] == [("edit", "both"), ("background", "derived")]


def test_background_is_never_squeezed_out_by_context():
    shape = (40, 40)
    halves = [Candidate("context", box_mask(shape, 0, 0, 40, 20), "source", 1.0),
              Candidate("context", box_mask(shape, 0, 20, 40, 40), "source", 0.5)]
    regions = postprocess(halves, shape, None, ProposerConfig(min_area_frac=0.01))
    assert [r.kind for r in regions] == ["context", "background"]
    assert regions[-1].area == 800
    check_partition(regions, shape)


@pytest.fixture
def astro_edit():
    src = photo("astronaut", 192)
    edited, truth = disk_edit(src, photo("chelsea", 192), (130, 70), 30)
    return src, edited, truth


def test_tiny_sam_proposals(astro_edit, tiny_sam_config):
    src, edited, truth = astro_edit
    regions = propose_sample(src, edited, tiny_sam_config)
    check_partition(regions, src.shape[:2])
    edits = [r for r in regions if r.kind == "edit"]
    assert edits and max(iou(r.mask, truth) for r in edits) >= 0.5
    assert all(r.proposer == "sam:tiny" and r.config_hash == tiny_sam_config.config_hash() for r in regions)
    assert any(r.kind == "context" for r in regions)
    non_bg = [r.mask for r in regions[:-1]]
    for i in range(len(non_bg)):
        for j in range(i):
            assert iou(non_bg[i], non_bg[j]) < tiny_sam_config.nms_iou


def test_tiny_sam_with_segment_anything_generator(astro_edit, tiny_sam_config):
    src, edited, _ = astro_edit
    cfg = dataclasses.replace(tiny_sam_config, context_generator="amg", points_per_side=2, max_regions=4)
    regions = propose_sample(src, edited, cfg)
    check_partition(regions, src.shape[:2])
    assert len(regions) <= 5


def test_identical_images_give_only_context_and_background(tiny_sam_config):
    src = photo("coffee", 128)
    for cfg in (tiny_sam_config, ProposerConfig()):
        regions = propose_sample(src, src.copy(), cfg)
        assert {r.kind for r in regions} <= {"context", "background"}
        check_partition(regions, src.shape[:2])


def test_classical_proposals_find_the_edit(astro_edit):
    src, edited, truth = astro_edit
    regions = propose_sample(src, edited, ProposerConfig(max_regions=6))
    check_partition(regions, src.shape[:2])
    assert len(regions) <= 7
    assert all(r.proposer == "classical" for r in regions)
    edits = [r for r in regions if r.kind == "edit"]
    assert len(edits) == 1 and iou(edits[0].mask, truth) >= 0.7


def test_group_union_covers_every_rollouts_edit():
    src = photo("astronaut", 160)
    donor = photo("rocket", 160)
    e1, t1 = paste_edit(src, donor, (10, 10, 50, 50))
    e2, t2 = paste_edit(src, donor, (100, 100, 150, 150))
    regions = propose_group(src, [e1, e2], ProposerConfig())
    edits = [r for r in regions if r.kind == "edit"]
    assert len(edits) == 2
    assert max(iou(r.mask, t1) for r in edits) > 0.7 and max(iou(r.mask, t2) for r in edits) > 0.7


def test_group_splits_an_edit_from_a_neighbour_only_some_rollouts_damaged():
    # A GRPO group: every rollout makes the edit (the rocket pasted into a box), one also
    # damages the touching box beside it. The union is one component; the split by rollouts
    # gives the edit and the damage a region each, so each can be rated (and rewarded) alone.
    src = photo("astronaut", 160)
    edit_box, damage_box = (20, 40, 80, 120), (80, 40, 140, 120)
    clean, truth = paste_edit(src, photo("rocket", 160), edit_box)
    damaged, neighbour = paste_edit(clean, photo("coffee", 160), damage_box)
    for split in (True, False):
        regions = propose_group(src, [clean, damaged, clean], ProposerConfig(rollout_split=split))
        check_partition(regions, src.shape[:2])
        edits = [r.mask for r in regions if r.kind == "edit"]
        if split:
            assert len(edits) == 2
            assert max(iou(m, truth) for m in edits) >= 0.8
            assert max(iou(m, neighbour) for m in edits) >= 0.8
        else:  # the union alone: one region, half edit and half damage
            assert len(edits) == 1 and iou(edits[0], truth | neighbour) >= 0.8
    # One rollout has nothing to split by.
    assert len([r for r in propose_sample(src, damaged, ProposerConfig()) if r.kind == "edit"]) == 1


def test_recorded_configs_propose_as_when_recorded():
    # Region sets and models recorded before `rollout_split` existed keep their config hash and
    # their behaviour; new settings default to the split.
    new = ProposerConfig()
    old = ProposerConfig.from_record({k: v for k, v in dataclasses.asdict(new).items()
                                      if k not in ("rollout_split", "rollout_split_share")})
    assert new.rollout_split and not old.rollout_split
    assert "rollout_split" not in old.canonical() and "rollout_split" in new.canonical()
    assert old.config_hash() != new.config_hash()
    assert ProposerConfig.from_record(dataclasses.asdict(new)).config_hash() == new.config_hash()
    with pytest.raises(ProposalError, match="rollout_split_share"):
        ProposerConfig(rollout_split_share=1.0)


def test_bad_inputs(tiny_sam_config):
    src = photo("chelsea", 64)
    with pytest.raises(ProposalError, match="smaller than the 16 px"):
        propose_sample(np.zeros((12, 40, 3), np.uint8), src, tiny_sam_config)
    with pytest.raises(ProposalError, match="at least one edited image"):
        propose_group(src, [], ProposerConfig())
    with pytest.raises(ProposalError, match="edited image 1 must be uint8"):
        propose_group(src, [src, src.astype(np.float32)], ProposerConfig())
    with pytest.raises(ProposalError, match="needs a checkpoint"):
        ProposerConfig(model_type="vit_b")
    with pytest.raises(ProposalError, match="not one of vit_h"):
        ProposerConfig(model_type="vit_q", checkpoint="x.pth")


def test_config_hash_is_stable_and_sensitive(tmp_path):
    a = ProposerConfig(model_type="vit_b", checkpoint="/a/sam_vit_b_01ec64.pth", device="cpu")
    b = ProposerConfig(model_type="vit_b", checkpoint="/b/sam_vit_b_01ec64.pth", device="cuda")
    assert a.config_hash() == b.config_hash() and len(a.config_hash()) == 16
    assert dataclasses.replace(a, max_regions=12).config_hash() != a.config_hash()
    assert ProposerConfig().proposer == "classical" and a.proposer == "sam:vit_b"


def test_record_and_stack_round_trip(astro_edit):
    from sfreward.regions import stack_masks
    from warehouse.masks import decode

    src, edited, _ = astro_edit
    regions = propose_sample(src, edited, ProposerConfig(max_regions=3))
    stacked = stack_masks(regions)
    assert stacked.shape == (len(regions), 192, 192) and stacked.dtype == bool
    for r in regions:
        rec = r.to_record()
        np.testing.assert_array_equal(decode(rec["mask"]), r.mask)
        assert rec["bbox"] == list(r.bbox) and rec["kind"] == r.kind
