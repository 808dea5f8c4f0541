"""Pretrained backbones and text encoders from local folders (tiny random checkpoints saved
with save_pretrained, laid out exactly like downloaded ones)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfreward.model import CheckpointError, SFRewardConfig, SFRewardModel, sha256_file
from sfreward.model.model import region_coverage
from tests.sfreward.model.checkpoints import MEAN, STD, make_checkpoint


def _inputs(s: int, b: int = 2, k: int = 2, seed: int = 0):
    from tests.fixtures.sfreward_data import photo
    from PIL import Image
    src = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(photo(n)).resize((s, s)))).permute(2, 0, 1)
                       for n in ("astronaut", "coffee")[:b]]).float() / 255
    edt = src.clone()
    edt[:, :, : s // 3, : s // 3] = 1 - edt[:, :, : s // 3, : s // 3]
    masks = []
    for i in range(b):
        m = torch.zeros(k, s, s, dtype=torch.bool)
        m[0, : s // 3, : s // 3] = True
        m[-1] = ~m[0]
        masks.append(m)
    return src, edt, masks


def test_issue_repro_siglip_224_patch16_trains_at_other_sizes(tmp_path):
    """The reported failure: a SigLIP folder saved at 224 px / patch 16 used at 64 px gave
    'The size of tensor a (16) must match the size of tensor b (196)'."""
    ck = make_checkpoint(tmp_path / "siglip", "siglip", 224, 16)
    own = SFRewardModel(SFRewardConfig(backbone_path=str(ck)))
    assert own.config.image_size == 224 and own.backbone.patch == 16 and not own.backbone.interpolate
    assert own.backbone(torch.rand(1, 3, 224, 224)).shape == (1, 14, 14, 32)
    small = SFRewardModel(SFRewardConfig(backbone_path=str(ck), image_size=64))
    assert small.backbone.interpolate
    src, edt, masks = _inputs(64)
    out = small.predict(src, edt, ["make the cup red", "x"], masks)
    assert out["overall"].shape == (2,) and torch.isfinite(out["success"]).all()


@pytest.mark.parametrize("family", ["siglip", "clip", "dinov2", "dinov2_reg"])
def test_patch14_at_384_gives_27x27_tokens(tmp_path, family):
    ck = make_checkpoint(tmp_path / family, family, 224, 14)
    m = SFRewardModel(SFRewardConfig(backbone_path=str(ck), image_size=384)).eval()
    assert m.backbone(torch.rand(2, 3, 384, 384)).shape == (2, 27, 27, 32)
    src, edt, masks = _inputs(384)
    out = m.predict(src, edt, ["a", "b"], masks)
    assert torch.isfinite(out["overall"]).all()


def test_dinov2_at_518_and_clip_cls_dropped(tmp_path):
    ck = make_checkpoint(tmp_path / "d", "dinov2", 518, 14)
    m = SFRewardModel(SFRewardConfig(backbone_path=str(ck)))
    assert m.config.image_size == 518
    assert m.backbone(torch.rand(1, 3, 518, 518)).shape == (1, 37, 37, 32)
    # CLIP: the CLS token comes first; the grid keeps the patch tokens in raster order.
    ck = make_checkpoint(tmp_path / "c", "clip", 64, 32)
    m = SFRewardModel(SFRewardConfig(backbone_path=str(ck))).eval()
    x = torch.rand(1, 3, 64, 64)
    hs = m.backbone.net(pixel_values=(x - m.backbone.mean) / m.backbone.std).last_hidden_state
    want = m.backbone.net.post_layernorm(hs)[:, 1:].reshape(1, 2, 2, 32)
    assert torch.allclose(m.backbone(x), want)
    # DINOv2 with registers: CLS + 4 register tokens come before the patch tokens.
    ck = make_checkpoint(tmp_path / "r", "dinov2_reg", 64, 32)
    m = SFRewardModel(SFRewardConfig(backbone_path=str(ck))).eval()
    assert m.config.backbone == "dinov2_reg"
    hs = m.backbone.net(pixel_values=(x - m.backbone.mean) / m.backbone.std).last_hidden_state
    assert hs.shape[1] == 1 + 4 + 4 and torch.allclose(m.backbone(x), hs[:, 5:].reshape(1, 2, 2, 32))


@pytest.mark.parametrize("s, p", [(384, 14), (224, 16), (64, 8), (100, 32)])
def test_region_coverage_matches_patch_footprints(s, p):
    """A mask covering exactly patch (i, j) covers token (i, j) fully and nothing else; pixels
    beyond g * p reach no token."""
    g = s // p
    masks = torch.zeros(3, s, s)
    masks[0, 2 * p:3 * p, (g - 1) * p:g * p] = 1      # patch (2, g-1)
    masks[1, :, g * p:] = 1                            # only the strip no token sees (if any)
    masks[2] = 1
    cov = region_coverage(masks, g, p)
    assert cov.shape == (3, g * g)
    want = torch.zeros(g * g)
    want[2 * g + g - 1] = 1
    assert torch.equal(cov[0], want)
    assert cov[1].sum() == 0 and torch.equal(cov[2], torch.ones(g * g))


def test_pixel_stats_and_lineage_from_folder(tmp_path):
    ck = make_checkpoint(tmp_path / "s", "siglip", 64, 16)
    m = SFRewardModel(SFRewardConfig(backbone_path=str(ck)))
    assert m.config.pixel_mean == pytest.approx(MEAN) and m.config.pixel_std == pytest.approx(STD)
    assert m.config.image_size == 64  # the processor's crop_size (48) is never applied
    src = m.config.backbone_source
    assert src["path"] == str(ck.resolve()) and src["model_type"] == "siglip_vision_model"
    assert src["weights_sha256"] == {"model.safetensors": sha256_file(ck / "model.safetensors")}
    m.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["pixel_mean"] == pytest.approx(MEAN) and saved["backbone_path"] is None


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_text_tower_of_the_same_checkpoint(tmp_path, family):
    ck = make_checkpoint(tmp_path / family, family, 64, 16, full=True)
    torch.manual_seed(0)
    m = SFRewardModel(SFRewardConfig(backbone_path=str(ck))).eval()
    assert m.config.text_encoder == "transformer" and m.config.text_source["model_type"] == family
    from safetensors.torch import load_file
    ref = load_file(str(ck / "model.safetensors"))
    emb = next(k for k in ref if k.startswith("text_model.") and k.endswith("token_embedding.weight"))
    assert torch.equal(m.text.net.state_dict()[emb[len("text_model."):]], ref[emb])
    emb_v = next(k for k in ref if k.startswith("vision_model.") and k.endswith("patch_embedding.weight"))
    assert torch.equal(m.backbone.net.state_dict()[emb_v[len("vision_model."):]], ref[emb_v])
    a = m.text(["make the cup red", "make the sky brighter"], torch.device("cpu"))
    assert a.shape == (2, m.config.hidden) and not torch.allclose(a[0], a[1])
    src, edt, masks = _inputs(64)
    ins = ["make the cup red", "warmer"]
    before = m.predict(src, edt, ins, masks)
    m.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "tokenizer" / "tokenizer.json").is_file()
    m2 = SFRewardModel.from_pretrained(tmp_path / "m")
    after = m2.predict(src, edt, ins, masks)
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_text_path_any_local_encoder_and_hash_fallback(tmp_path):
    clip = make_checkpoint(tmp_path / "clip", "clip", 64, 16, full=True)
    dino = make_checkpoint(tmp_path / "dino", "dinov2", 64, 16)
    m = SFRewardModel(SFRewardConfig(backbone_path=str(dino)))
    assert m.config.text_encoder == "hash" and m.config.text_source is None   # no text tower
    m = SFRewardModel(SFRewardConfig(backbone_path=str(dino), text_path=str(clip)))
    assert m.config.text_encoder == "transformer" and m.config.text_source["path"] == str(clip.resolve())
    assert m.config.backbone == "dinov2"
    m = SFRewardModel(SFRewardConfig(backbone_path=str(clip), text_encoder="hash"))
    assert m.config.text_encoder == "hash"


@pytest.mark.parametrize("case, message", [
    ("no_weights", "no weights file"),
    ("wrong_type", "is not a supported vision backbone"),
    ("patch_gt_image", "patch_size 64 is larger than image_size 32"),
    ("no_tokenizer", "no tokenizer"),
    ("no_text_tower", "has no text tower"),
    ("no_folder", "no such folder"),
    ("patch_gt_train_size", "smaller than the backbone's patch"),
])
def test_bad_checkpoints_are_clear_errors(tmp_path, case, message):
    ck = tmp_path / "ck"
    kw = {}
    if case == "no_weights":
        make_checkpoint(ck, "siglip", 64, 16)
        (ck / "model.safetensors").unlink()
    elif case == "wrong_type":
        from transformers import BertConfig, BertModel
        BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(str(ck))
    elif case == "patch_gt_image":
        make_checkpoint(ck, "siglip", 64, 16)
        cfg = json.loads((ck / "config.json").read_text())
        (ck / "config.json").write_text(json.dumps({**cfg, "image_size": 32, "patch_size": 64}))
    elif case == "no_tokenizer":
        make_checkpoint(ck, "clip", 64, 16, full=True, tokenizer=False)
    elif case == "no_text_tower":
        make_checkpoint(ck, "dinov2", 64, 16)
        kw = {"text_encoder": "checkpoint"}
    elif case == "patch_gt_train_size":
        make_checkpoint(ck, "siglip", 64, 32)
        kw = {"image_size": 16}
    with pytest.raises(ValueError, match=message) as err:
        SFRewardModel(SFRewardConfig(backbone_path=str(ck), **kw))
    if case not in ("patch_gt_train_size",):
        assert isinstance(err.value, CheckpointError) and str(ck) in str(err.value)


def test_saved_model_without_its_tokenizer_is_refused(tmp_path):
    from sfreward.model import ArtifactError
    ck = make_checkpoint(tmp_path / "clip", "clip", 64, 16, full=True)
    SFRewardModel(SFRewardConfig(backbone_path=str(ck))).save_pretrained(tmp_path / "m")
    import shutil
    shutil.rmtree(tmp_path / "m" / "tokenizer")
    with pytest.raises(ArtifactError, match=r"tokenizer folder .*m/tokenizer.*missing"):
        SFRewardModel.from_pretrained(tmp_path / "m")
