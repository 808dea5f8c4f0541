"""SFRewardModel: shapes for any number of regions, mask pooling, save/load, the contract."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfreward.model import ArtifactError, SFRewardConfig, SFRewardModel
from sfreward.model.backbone import hash_tokens

torch.set_num_threads(1)
S = 64


def _photos(b: int) -> torch.Tensor:
    import skimage.data
    from PIL import Image
    imgs = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    out = [torch.from_numpy(np.asarray(Image.fromarray(imgs[i % 4]).resize((S, S)))).permute(2, 0, 1)
           for i in range(b)]
    return torch.stack(out).float() / 255


def _masks(k: int, seed: int) -> torch.Tensor:
    """k regions: k-1 random boxes and the background (complement), bool [k, S, S]."""
    g = torch.Generator().manual_seed(seed)
    ms = []
    taken = torch.zeros(S, S, dtype=torch.bool)
    for _ in range(k - 1):
        y, x = torch.randint(0, S - 16, (2,), generator=g).tolist()
        m = torch.zeros(S, S, dtype=torch.bool)
        m[y:y + 16, x:x + 16] = True
        m &= ~taken
        taken |= m
        ms.append(m)
    ms.append(~taken)
    return torch.stack(ms)


@pytest.fixture(scope="module")
def model() -> SFRewardModel:
    torch.manual_seed(0)
    return SFRewardModel(SFRewardConfig(image_size=S)).eval()


@pytest.mark.parametrize("ks", [[1], [1, 1], [3], [1, 4, 2], [6, 1, 1, 2]])
def test_predict_shapes_any_region_count(model, ks):
    b = len(ks)
    src = _photos(b)
    edt = (src * 0.9).clamp(0, 1)
    out = model.predict(src, edt, [f"edit {i}" for i in range(b)], [_masks(k, i) for i, k in enumerate(ks)])
    r = sum(ks)
    for key in ("success", "preserve", "success_std", "preserve_std", "region_image", "region_weight"):
        assert out[key].shape == (r,), key
    for key in ("naturalness", "artifacts", "overall", "background"):
        assert out[key].shape == (b,), key
    assert out["region_image"].tolist() == [i for i, k in enumerate(ks) for _ in range(k)]
    for key in ("success", "preserve", "naturalness", "artifacts", "overall"):
        assert torch.all((out[key] >= 0) & (out[key] <= 25)), key
    assert torch.all(out["success_std"] > 0)
    # region weights are a distribution per image
    sums = torch.zeros(b).index_add(0, out["region_image"], out["region_weight"])
    assert torch.allclose(sums, torch.ones(b), atol=1e-5)
    # overall = region-weighted phi, background (last region of each image) on preserve alone
    last = torch.tensor(ks).cumsum(0) - 1
    phi = torch.minimum(out["success"], out["preserve"])
    phi[last] = out["preserve"][last]
    overall = torch.zeros(b).index_add(0, out["region_image"], out["region_weight"] * phi)
    assert torch.allclose(overall, out["overall"], atol=1e-4)
    assert torch.equal(out["background"], out["preserve"][last])


def test_batched_equals_per_image(model):
    """Packing regions of several images in one forward gives each image's own scores."""
    ks = [2, 1, 4]
    src = _photos(3)
    edt = src.flip(-1)
    masks = [_masks(k, 10 + i) for i, k in enumerate(ks)]
    instr = ["make the sky red", "remove the cat", ""]
    batched = model.predict(src, edt, instr, masks)
    for i in range(3):
        one = model.predict(src[i:i + 1], edt[i:i + 1], instr[i:i + 1], masks[i:i + 1])
        sel = batched["region_image"] == i
        assert torch.allclose(one["success"], batched["success"][sel], atol=1e-4)
        assert torch.allclose(one["overall"], batched["overall"][i:i + 1], atol=1e-4)


def test_region_score_depends_only_on_its_mask(model):
    """Two regions with the same mask get the same scores; a different mask differs."""
    src = _photos(1)
    edt = src.clone()
    edt[:, :, :32, :32] = 0.0  # damage the top-left quadrant
    tl = torch.zeros(S, S, dtype=torch.bool)
    tl[:32, :32] = True
    masks = torch.stack([tl, tl, ~tl])
    out = model.predict(src, edt, ["x"], [masks])
    assert torch.allclose(out["preserve"][0], out["preserve"][1])
    assert not torch.allclose(out["preserve"][0], out["preserve"][2])


def test_empty_region_mask_gives_finite_scores(model):
    masks = torch.zeros(2, S, S, dtype=torch.bool)
    masks[1] = True
    out = model.predict(_photos(1), _photos(1), ["x"], [masks])
    assert torch.isfinite(out["success"]).all() and torch.isfinite(out["overall"]).all()


def test_resizes_inputs_of_another_size(model):
    src = torch.nn.functional.interpolate(_photos(1), size=(96, 96))
    out = model.predict(src, src, ["x"], [torch.ones(1, 96, 96, dtype=torch.bool)])
    assert out["success"].shape == (1,)


@pytest.mark.parametrize("bad, match", [
    (lambda s, m: (s, s[:, :2], ["x"], m), "sources/edits"),
    (lambda s, m: (s, s, ["x", "y"], m), "instructions"),
    (lambda s, m: (s, s, ["x"], []), "masks"),
    (lambda s, m: (s, s, ["x"], [torch.ones(0, S, S, dtype=torch.bool)]), r"masks\[0\]"),
    (lambda s, m: (s, s, ["x"], [torch.ones(2, S, S - 1, dtype=torch.bool)]), r"masks\[0\]"),
])
def test_bad_inputs_name_the_input(model, bad, match):
    s = _photos(1)
    with pytest.raises(ValueError, match=match):
        model.predict(*bad(s, [_masks(2, 0)]))


@pytest.mark.parametrize("backbone", ["siglip", "clip", "dinov2"])
def test_save_load_roundtrip(tmp_path, backbone):
    torch.manual_seed(1)
    m = SFRewardModel(SFRewardConfig(backbone=backbone, image_size=S)).eval()
    m.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["backbone"] == backbone and cfg["backbone_config"]["hidden_size"] == 64
    m2 = SFRewardModel.from_pretrained(tmp_path / "m")
    src = _photos(2)
    masks = [_masks(3, 0), _masks(1, 1)]
    a = m.predict(src, src.flip(-2), ["a", "b"], masks)
    b = m2.predict(src, src.flip(-2), ["a", "b"], masks)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_backbone_from_local_pretrained_dir(tmp_path):
    """A transformers vision model saved locally initialises the backbone (no download)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel
    torch.manual_seed(2)
    hf = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, image_size=S, patch_size=16))
    hf.save_pretrained(tmp_path / "siglip")
    m = SFRewardModel(SFRewardConfig(backbone_path=str(tmp_path / "siglip"), image_size=S))
    key = "embeddings.patch_embedding.weight"
    key = next(k for k in hf.state_dict() if k.endswith(key))
    assert torch.equal(m.backbone.net.state_dict()[key], hf.state_dict()[key])
    assert m.config.backbone_path is None and m.config.backbone_config["patch_size"] == 16
    m.save_pretrained(tmp_path / "m")  # reloads without the pretrained dir
    (tmp_path / "siglip" / "model.safetensors").unlink()
    SFRewardModel.from_pretrained(tmp_path / "m")


def test_missing_pretrained_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="backbone_path"):
        SFRewardModel(SFRewardConfig(backbone_path=str(tmp_path / "nope")))


def test_tampered_weights_refused_via_model_card(tmp_path):
    from sfreward.model import sha256_file
    m = SFRewardModel(SFRewardConfig(image_size=S))
    w = m.save_pretrained(tmp_path)
    (tmp_path / "model_card.json").write_text(json.dumps({"weights_sha256": sha256_file(w)}))
    SFRewardModel.from_pretrained(tmp_path)
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        SFRewardModel.from_pretrained(tmp_path)


def test_hash_tokens_stable_and_offline():
    a = hash_tokens("Make the Sky red", 4096)
    assert a == hash_tokens("make the sky RED!", 4096)
    assert len(a) == 4 + 3 and all(1 <= t < 4096 for t in a)
    assert hash_tokens("", 4096) == []


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 7, 5), (3, 1, 2, 9)])
def test_blur3x3_equals_avg_pool_without_padding(shape):
    """The shifted-add blur of pixel_stats gives avg_pool2d(count_include_pad=False)'s values,
    borders and corners included (a 1-pixel-wide image too)."""
    import torch.nn.functional as F

    from sfreward.model.model import blur3x3
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    ref = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    torch.testing.assert_close(blur3x3(x), ref, atol=1e-6, rtol=1e-6)
    # By hand at a corner: mean of the 2x2 block it has.
    assert blur3x3(x)[0, 0, 0, 0].item() == pytest.approx(x[0, 0, :2, :2].mean().item(), abs=1e-6)


def test_predict_keeps_the_training_mode(model):
    x = _photos(1)
    m = [_masks(2, 0)]
    model.train()
    try:
        train_out = model.predict(x, x, ["a"], m)
        assert model.training and all(mod.training for mod in model.modules())
    finally:
        model.eval()
    eval_out = model.predict(x, x, ["a"], m)
    assert not any(mod.training for mod in model.modules())
    torch.testing.assert_close(train_out["success"], eval_out["success"])  # scored in eval mode both times


def test_region_pixel_stats_pool_each_region_over_its_own_image():
    from sfreward.model.model import N_REGION_STATS, region_pixel_stats
    src = _photos(2)
    edt = src.clone()
    edt[1, :, :32] = (edt[1, :, :32] + 0.3).clamp(0, 1)          # image 1's top half brightened
    top = torch.zeros(S, S, dtype=torch.bool)
    top[:32] = True
    m = torch.stack([top, ~top, top, ~top])
    st = region_pixel_stats(src, edt, m, torch.tensor([0, 0, 1, 1]))
    assert st.shape == (4, N_REGION_STATS)
    assert float(st[:2, :3].abs().max()) == 0.0                  # image 0 unchanged
    assert float(st[2, :3].mean()) > 0.1 and float(st[3, :3].abs().max()) == 0.0
    # the mean source colour (last 3 columns) is the region's own
    assert torch.allclose(st[2, -3:], src[1, :, :32].mean((1, 2)), atol=1e-5)


def test_structure_stats_tell_damage_from_a_tone_change():
    """On a real photo: noise and blur break the correlation of the high-frequency part, a
    contrast loss shows in the deviation ratio, a brightness shift keeps the structure."""
    from sfreward.model.model import N_REGION_STATS, region_pixel_stats
    from scipy import ndimage
    src = _photos(1).repeat(4, 1, 1, 1)
    q = torch.zeros(4, S, S, dtype=torch.bool)                      # the quadrant each image damages
    for i, (y, x) in enumerate([(0, 0), (0, 32), (32, 0), (32, 32)]):
        q[i, y:y + 32, x:x + 32] = True
    edt = src.clone()
    g = torch.Generator().manual_seed(0)
    noisy = (src[0] + 0.15 * torch.randn(src[0].shape, generator=g)).clamp(0, 1)
    blurred = torch.from_numpy(ndimage.gaussian_filter(src[1].numpy(), (0, 2, 2)))
    low = src[2].mean() + (src[2] - src[2].mean()) * 0.3
    bright = (src[3] + 0.15).clamp(0, 1)
    for i, new in enumerate([noisy, blurred, low, bright]):
        edt[i][:, q[i]] = new[:, q[i]]
    st = region_pixel_stats(src, edt, q, torch.arange(4), structure=True)[:, N_REGION_STATS:]
    sd_e, sd_s, ratio, corr, hcorr = st.unbind(1)
    assert max(hcorr[0], hcorr[1]) < 0.7 < 0.85 < min(hcorr[2], hcorr[3])   # noise, blur vs tone
    assert ratio[2] < -0.7 and corr[2] > 0.95                       # contrast loss: same structure
    assert ratio[1] < -0.2                                          # blur lowers the deviation too
    assert corr[3] > 0.95 and abs(float(ratio[3])) < 0.15           # brightness: structure kept
    unchanged = region_pixel_stats(src, src, q, torch.arange(4), structure=True)[:, N_REGION_STATS:]
    assert torch.allclose(unchanged[:, 2:], torch.tensor([0.0, 1.0, 1.0]).expand(4, 3), atol=1e-4)


def test_damage_stats_grade_contrast_loss_and_blocking():
    """Version 3's damage terms on a real photo: a strong contrast loss of a low-texture region
    reads close to its true ratio (the structure ratio's 0.01 flattens it), and larger blocks
    make more of the region flat."""
    from sfreward.model.regionstats import N_DAMAGE_STATS, N_REGION_STATS, N_STRUCTURE_STATS, region_pixel_stats
    src = _photos(1).repeat(3, 1, 1, 1)
    src = src.mean((2, 3), keepdim=True) + 0.25 * (src - src.mean((2, 3), keepdim=True))   # low texture
    q = torch.zeros(3, S, S, dtype=torch.bool)
    q[:, 8:56, 8:56] = True
    edt = src.clone()
    m = src[0][:, q[0]].mean(1, keepdim=True)
    edt[0][:, q[0]] = m + 0.22 * (src[0][:, q[0]] - m)                # contrast to 22%
    for i, b in ((1, 4), (2, 12)):                                    # blocks of 4 and of 12 px
        blocky = src[i][:, ::b, ::b].repeat_interleave(b, 1).repeat_interleave(b, 2)[:, :S, :S]
        edt[i][:, q[i]] = blocky[:, q[i]]
    edt = (edt * 255).round() / 255                                   # 8-bit images, as stored
    src = (src * 255).round() / 255
    st = region_pixel_stats(src, edt, q, torch.arange(3), structure=True, damage=True)
    assert st.shape == (3, N_REGION_STATS + N_STRUCTURE_STATS + N_DAMAGE_STATS)
    coarse, (fine, flat, flat_gain) = st[:, N_REGION_STATS + 2], st[:, -3:].unbind(1)
    true = torch.log(torch.tensor(0.22))
    assert abs(float(fine[0] - true)) < abs(float(coarse[0] - true)) - 0.1
    assert 0.0 < float(flat_gain[1]) < float(flat_gain[2]) and float(flat[2]) > 0.8
    same = region_pixel_stats(src, src, q, torch.arange(3), structure=True, damage=True)[:, -3:]
    assert float(same[:, 0].abs().max()) < 1e-5 and float(same[:, 2].abs().max()) == 0.0
    import pytest
    with pytest.raises(ValueError, match="structure"):
        region_pixel_stats(src, edt, q, torch.arange(3), damage=True)
