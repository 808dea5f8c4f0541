"""Loading SAM checkpoints through the real code path, with clear errors."""
import numpy as np
import pytest
import torch

from sfreward.regions.sam import (CheckpointError, build_sam_tiny, embed_images, grid_masks, load_sam,
                                  predict_prompts)
from tests.fixtures.core import photo


def test_tiny_checkpoint_loads_once_per_process(tiny_sam_checkpoint):
    sam = load_sam(tiny_sam_checkpoint, "tiny", "cpu")
    assert load_sam(str(tiny_sam_checkpoint), "tiny", "cpu") is sam
    # The weights are the saved ones, not a fresh random init.
    saved = torch.load(tiny_sam_checkpoint, weights_only=True)
    assert torch.equal(sam.state_dict()["mask_decoder.iou_token.weight"], saved["mask_decoder.iou_token.weight"])
    assert sum(p.numel() for p in sam.parameters()) < 400_000


def test_missing_checkpoint_names_path_and_type(tmp_path):
    path = tmp_path / "nope" / "sam_vit_b_01ec64.pth"
    with pytest.raises(CheckpointError, match="does not exist") as ei:
        load_sam(path, "vit_b")
    assert str(path) in str(ei.value) and "vit_b" in str(ei.value)


def test_corrupt_checkpoint(tmp_path, tiny_sam_checkpoint):
    bad = tmp_path / "sam_tiny_truncated.pth"
    bad.write_bytes(tiny_sam_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot be read") as ei:
        load_sam(bad, "tiny")
    assert str(bad) in str(ei.value) and "tiny" in str(ei.value)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_sam(text, "tiny")


def test_wrong_model_type_is_detected_before_building(tiny_sam_checkpoint):
    with pytest.raises(CheckpointError, match="does not match model type vit_h") as ei:
        load_sam(tiny_sam_checkpoint, "vit_h")
    assert "looks like tiny" in str(ei.value)


def test_state_dict_with_missing_keys(tmp_path):
    sd = build_sam_tiny().state_dict()
    sd.pop("mask_decoder.iou_token.weight")
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="does not match model type tiny"):
        load_sam(path, "tiny")


def test_unknown_model_type(tiny_sam_checkpoint):
    with pytest.raises(CheckpointError, match="unknown SAM model type 'vit_x'"):
        load_sam(tiny_sam_checkpoint, "vit_x")


def test_batched_embeddings_match_single(tiny_sam_checkpoint):
    sam = load_sam(tiny_sam_checkpoint, "tiny", "cpu")
    imgs = [photo("astronaut", 96), photo("coffee", None)[:200, :300].copy()]
    batched = embed_images(sam, imgs, batch_size=2)
    single = [embed_images(sam, [im], batch_size=1)[0] for im in imgs]
    for b, s, im in zip(batched, single, imgs):
        assert b.original_size == im.shape[:2]
        torch.testing.assert_close(b.features, s.features, atol=1e-4, rtol=1e-4)
    assert batched[1].input_size == (171, 256)  # long side resized to img_size 256


def test_prompts_and_grid_masks_have_image_shape(tiny_sam_checkpoint):
    sam = load_sam(tiny_sam_checkpoint, "tiny", "cpu")
    img = photo("chelsea", 100)
    emb = embed_images(sam, [img])[0]
    masks, piou, stab = predict_prompts(sam, emb, np.array([[10, 10, 60, 60.0], [50, 50, 90, 90]]),
                                        np.array([[35, 35.0], [70, 70]]))
    assert masks.shape == (2, 100, 100) and masks.dtype == bool
    assert piou.shape == stab.shape == (2,)
    recs = grid_masks(sam, emb, points_per_side=3, pred_iou_thresh=-10, stability_score_thresh=0.0)
    assert recs and all(r["segmentation"].shape == (100, 100) and r["segmentation"].any() for r in recs)
    assert [r["predicted_iou"] for r in recs] == sorted((r["predicted_iou"] for r in recs), reverse=True)


def test_sam_path_masks_are_sams_not_the_change_map_fallback(tiny_sam_config):
    """The edit region must be the mask SAM predicts for the change's prompt, which differs from
    the change-map component the proposer falls back to: this fails if SAM is skipped (the
    random tiny SAM's masks rarely cover their change, so `edit_min_cover=0` admits them)."""
    import dataclasses
    import math

    from sfreward.regions import propose_sample
    from sfreward.regions.changemap import components, prompt_for
    from sfreward.regions.proposer import Proposer
    from tests.fixtures.regions import disk_edit

    src = photo("astronaut", 192)
    edited, _ = disk_edit(src, photo("chelsea", 192), (130, 70), 30)
    cfg = dataclasses.replace(tiny_sam_config, edit_min_cover=0.0)
    regions = propose_sample(src, edited, cfg)

    union = Proposer(cfg).change_maps(src, [edited])[0]
    [comp] = components(union, min_area=max(1, math.ceil(cfg.min_area_frac * union.size)))[:1]
    box, point = prompt_for(comp)
    sam = load_sam(cfg.checkpoint, "tiny", "cpu")
    [emb] = embed_images(sam, [src])
    masks, piou, _ = predict_prompts(sam, emb, box[None], point[None])

    [edit] = [r for r in regions if r.kind == "edit"]
    assert edit.proposed_on in ("source", "both") and edit.predicted_iou == pytest.approx(float(piou[0]), abs=1e-5)
    assert np.array_equal(edit.mask, masks[0])          # SAM's own mask ...
    assert not np.array_equal(edit.mask, comp)          # ... not the change-map component
    # Context regions come from SAM's grid (with its quality estimates), not from image segments.
    ctx = [r for r in regions if r.kind == "context"]
    assert ctx and all(r.predicted_iou is not None and r.proposed_on == "source" for r in ctx)
    classical = propose_sample(src, edited, dataclasses.replace(cfg, model_type=None, checkpoint=None))
    assert all(r.predicted_iou is None for r in classical)
