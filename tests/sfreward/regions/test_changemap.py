"""The change map finds known synthetic edits on real photos."""
import numpy as np
import pytest

from sfreward.regions import ProposalError
from sfreward.regions.changemap import change_map, components, match_size, prompt_for
from tests.fixtures.core import photo
from tests.fixtures.regions import disk_edit, iou, paste_edit


@pytest.mark.parametrize("donor", ["chelsea", "coffee"])
def test_pasted_patch_is_found(donor):
    src = photo("astronaut", 256)
    edited, truth = paste_edit(src, photo(donor, 256), (150, 60, 230, 140))
    assert iou(change_map(src, edited), truth) >= 0.85


def test_disk_edit_under_global_noise_is_found(rng):
    # Editors re-encode every pixel: mild noise everywhere must not become a change.
    src = photo("coffee", 256)
    edited, truth = disk_edit(src, photo("rocket", 256), (90, 160), 40)
    noisy = np.clip(edited.astype(int) + rng.normal(0, 4, edited.shape).round(), 0, 255).astype(np.uint8)
    cm = change_map(src, noisy)
    assert iou(cm, truth) >= 0.8
    assert len(components(cm)) == 1


def test_identical_images_have_no_change():
    src = photo("chelsea", 128)
    assert not change_map(src, src.copy()).any()


def test_large_image_change_map_at_reduced_working_resolution():
    src = photo("astronaut", 768)
    edited, truth = disk_edit(src, photo("coffee", 768), (500, 300), 120)
    cm = change_map(src, edited, work_side=384)
    assert cm.shape == (768, 768)
    assert iou(cm, truth) >= 0.9


def test_edited_at_other_resolution_is_mapped_to_source_grid():
    src = photo("astronaut", 256)
    edited, truth = paste_edit(src, photo("chelsea", 256), (20, 20, 120, 100))
    small = match_size(edited, (128, 128))
    cm = change_map(src, small)
    assert cm.shape == (256, 256)
    assert iou(cm, truth) >= 0.8


def test_two_edits_give_two_components_largest_first():
    src = photo("astronaut", 256)
    donor = photo("chelsea", 256)
    e, t1 = paste_edit(src, donor, (10, 10, 60, 60))
    e, t2 = paste_edit(e, donor, (140, 140, 240, 240))
    comps = components(change_map(src, e), min_area=20)
    assert len(comps) == 2
    assert iou(comps[0], t2) > 0.8 and iou(comps[1], t1) > 0.8


def test_prompt_point_lies_inside_a_c_shape():
    comp = np.zeros((64, 64), bool)
    comp[10:50, 10:20] = comp[10:20, 10:50] = comp[40:50, 10:50] = True  # a "C"
    box, point = prompt_for(comp, pad_frac=0.0)
    assert box.tolist() == [10, 10, 50, 50]
    assert comp[int(point[1]), int(point[0])]


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((64, 64), np.uint8), r"RGB \[H, W, 3\]"),
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 3), np.uint8), "smaller than the 16 px"),
])
def test_bad_inputs_name_the_image(bad, msg):
    with pytest.raises(ProposalError, match=msg) as ei:
        change_map(photo("chelsea", 64), bad)
    assert "edited image" in str(ei.value)


def test_edit_touching_the_border_keeps_its_border_pixels():
    src = photo("astronaut", 256)
    edited, truth = paste_edit(src, photo("chelsea", 256), (0, 0, 80, 80))
    cm = change_map(src, edited)
    assert iou(cm, truth) >= 0.9
    assert cm[0, 5:75].all() and cm[5:75, 0].all()


def test_merge_fragments_joins_one_change_keeps_separate_targets_drops_slivers():
    from sfreward.regions.changemap import merge_fragments

    def box(y1, y2, x1, x2):
        m = np.zeros((100, 100), bool)
        m[y1:y2, x1:x2] = True
        return m

    a, a2 = box(10, 30, 10, 30), box(10, 30, 33, 50)     # one recolour split by a 3 px seam
    far = box(70, 90, 70, 90)                           # a second target of the instruction
    sliver = box(50, 51, 0, 40)                         # a 1 px line of changed edge pixels
    out = merge_fragments([a, a2, far, sliver], gap_px=3, sliver_px=2)
    assert len(out) == 2
    assert np.array_equal(out[0], a | a2) and np.array_equal(out[1], far)
    # Without a gap nothing merges; without a sliver depth the line stays.
    assert len(merge_fragments([a, a2, far, sliver], gap_px=0, sliver_px=0)) == 4


def test_split_by_rollouts_separates_what_different_rollouts_changed():
    from sfreward.regions.changemap import split_by_rollouts

    def box(y1, y2, x1, x2):
        m = np.zeros((100, 100), bool)
        m[y1:y2, x1:x2] = True
        return m

    target, seam = box(10, 50, 10, 40) | box(10, 50, 43, 60), box(10, 50, 40, 43)
    neighbour = box(10, 50, 60, 90)                     # touches the target: one component
    edge = box(10, 50, 60, 62)                          # one rollout's edit reached 2 px further
    r0, r1, r2 = target | edge, target | neighbour, target.copy()   # only r1 damaged the neighbour
    component = target | seam | neighbour
    parts = split_by_rollouts(component, [r0, r1, r2], None, min_px=100)
    assert len(parts) == 2
    assert not (parts[0] & parts[1]).any() and np.array_equal(parts[0] | parts[1], component)
    edit, damaged = parts if parts[0][20, 20] else parts[::-1]
    # The target's two fragments (apart by an unchanged seam) stay one part, the seam with them;
    # the 2 px edge is under min_px and joins whichever part is nearer, pixel by pixel.
    assert (edit >= (target | seam)).all() and (damaged >= box(10, 50, 62, 90)).all()
    # One rollout, or every part changed by the same rollouts: the component stays whole.
    assert len(split_by_rollouts(component, [r1], None, min_px=100)) == 1
    assert len(split_by_rollouts(component, [r1, r1], None, min_px=100)) == 1
    # A part under the share, or at most a sliver deep, is not a part of its own.
    assert len(split_by_rollouts(component, [r0, r1, r2], None, min_px=100, min_share=0.5)) == 1
    assert len(split_by_rollouts(component, [r0, r1, r2], None, min_px=10, min_share=0)) == 3
    assert len(split_by_rollouts(component, [r0, r1, r2], None, min_px=10, min_share=0, sliver_px=2)) == 2


def test_split_by_rollouts_votes_per_segment():
    # A partial edit passes the change threshold on scattered pixels of its object only. Pixel
    # signatures cut the object into pieces; a vote per source segment keeps it whole.
    from sfreward.regions.changemap import split_by_rollouts

    target = np.zeros((100, 100), bool)
    target[10:50, 10:50] = True
    neighbour = np.zeros((100, 100), bool)
    neighbour[10:50, 50:90] = True
    segments = np.zeros((100, 100), int)
    segments[target], segments[neighbour] = 1, 2
    half = target & (np.add.outer(np.arange(100), np.arange(100)) // 4 % 2 == 0)  # 4 px stripes
    full, partial, damaged = target, half, target | neighbour
    maps = [full, partial, damaged]
    component = target | neighbour
    pixelwise = split_by_rollouts(component, maps, None, min_px=50)
    assert len(pixelwise) == 3                       # the target in two interleaved pieces
    voted = split_by_rollouts(component, maps, segments, min_px=50)
    assert len(voted) == 2
    assert any(np.array_equal(p, target) for p in voted) and any(np.array_equal(p, neighbour) for p in voted)
