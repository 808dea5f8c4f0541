"""Instruction grounding features (sfreward.model.grounding): the lexicon parse of instructions,
features that single out the region an instruction names, and the model option that uses them."""
import pytest
import torch

from sfreward.model import SFRewardConfig, SFRewardModel
from sfreward.model.grounding import N_GROUNDING, grounding_features, parse, region_geometry, rgb_to_vec

torch.set_num_threads(1)


def test_parse_reads_place_colours_and_operation():
    p = parse("Change the color of the orange region in the upper right to cyan.")
    assert p.place == (5 / 6, 1 / 6) and (p.region_colour, p.target_colour) == ("orange", "cyan")
    p = parse("Make the orange region in the upper left black and white.")
    assert p.desaturate and p.region_colour == "orange" and p.target_colour is None
    p = parse("Make the gray region at the bottom brighter.")
    assert p.brighten and not p.darken and p.region_colour == "gray" and p.place == (0.5, 5 / 6)
    p = parse("Make the hat blue")                      # no region colour, a target colour
    assert p.place is None and (p.region_colour, p.target_colour) == (None, "blue")
    p = parse("remove the watermark")                   # nothing of the lexicon: all neutral
    assert p == type(p)()


def test_rgb_to_vec_hue_and_greys():
    v = rgb_to_vec(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.5, 0.5, 0.5]]))
    assert torch.allclose(v[0], torch.tensor([1.0, 0.0, 1.0]), atol=1e-6)      # red: hue 0
    assert torch.allclose(v[1], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)     # cyan: hue 180
    assert torch.allclose(v[2], torch.tensor([0.0, 0.0, 0.5]), atol=1e-6)      # grey: no chroma


def _scene():
    """Two regions: orange top-left (recoloured to cyan in the edit) and orange bottom-right
    (left alone), 32 px."""
    src = torch.zeros(1, 3, 32, 32)
    src[0, :, :, :] = torch.tensor([1.0, 0.5, 0.0])[:, None, None]     # orange everywhere
    edt = src.clone()
    edt[0, :, :12, :12] = torch.tensor([0.0, 0.9, 0.9])[:, None, None]   # cyan top-left
    masks = torch.zeros(2, 32, 32)
    masks[0, :12, :12] = 1
    masks[1, 20:, 20:] = 1
    return src, edt, masks, torch.zeros(2, dtype=torch.long)


def test_features_single_out_the_named_region():
    src, edt, masks, idx = _scene()
    s, e, c = region_geometry(masks, idx, src, edt)
    assert torch.allclose(c[0], torch.tensor([6 / 32, 6 / 32])) and torch.allclose(c[1], torch.tensor([26 / 32, 26 / 32]))
    f = grounding_features(["Make the orange region in the upper left cyan."], s, e, c, idx)
    assert f.shape == (2, N_GROUNDING)
    assert f[0, 0] == 1 and f[0, 1] < 0.1 < 0.5 < f[1, 1]              # named place: near vs far
    assert f[0, 5] < 0.3 < 1.0 < f[1, 5]                                 # edited colour: cyan vs orange
    g = grounding_features(["remove the watermark"], s, e, c, idx)
    assert torch.count_nonzero(g[:, :12]) == 0                           # nothing named: all zero


def test_model_with_grounding_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = SFRewardModel(SFRewardConfig(grounding=True)).eval()
    assert "grounding.0.weight" not in model.freeze_unused_parameters()
    src, edt, masks, _ = _scene()
    big = [torch.nn.functional.interpolate(x, size=64) for x in (src, edt)]
    m = torch.nn.functional.interpolate(masks[None], size=64)[0] > 0.5
    out = model.predict(big[0], big[1], ["Make the orange region in the upper left cyan."], [m])
    model.save_pretrained(tmp_path)
    again = SFRewardModel.from_pretrained(tmp_path)
    assert again.config.grounding
    out2 = again.predict(big[0], big[1], ["Make the orange region in the upper left cyan."], [m])
    assert torch.equal(out["success"], out2["success"])
    assert not any(k.startswith("grounding.") for k in SFRewardModel(SFRewardConfig()).state_dict())


def test_features_only_region_head_reads_no_tokens_or_text(tmp_path):
    """region_inputs='features': the region scores depend on the region's own pixels, its
    grounding features and kind, never on pixels outside the regions' footprint or on words
    outside the grounding lexicon; the image head still reads the patch tokens. Saved and
    reloaded, it scores the same."""
    torch.manual_seed(0)
    model = SFRewardModel(SFRewardConfig(grounding=True, region_inputs="features")).eval()
    src, edt, masks, _ = _scene()
    big = [torch.nn.functional.interpolate(x, size=64) for x in (src, edt)]
    m = torch.nn.functional.interpolate(masks[None], size=64)[0] > 0.5
    text = "Make the orange region in the upper left cyan."
    out = model.predict(big[0], big[1], [text], [m])
    # Pixels outside every region change (in both images alike), the instruction gains words
    # outside the lexicon: region scores stay, the image-level scores move.
    src2, edt2 = big[0].clone(), big[1].clone()
    assert not m[:, 26:38].any()                   # a band well away from both regions
    src2[0, :, 28:36] = edt2[0, :, 28:36] = 0.2
    out2 = model.predict(src2, edt2, [text + " Please keep the watermark."], [m])
    for key in ("success", "preserve", "success_std", "preserve_std"):
        assert torch.allclose(out[key], out2[key], atol=1e-6), key
    assert not torch.allclose(out["naturalness"], out2["naturalness"])
    # The grounding features do reach the head: another named place moves the scores.
    out3 = model.predict(big[0], big[1], ["Make the orange region in the lower right cyan."], [m])
    assert not torch.allclose(out["success"], out3["success"])
    model.save_pretrained(tmp_path)
    again = SFRewardModel.from_pretrained(tmp_path)
    assert again.config.region_inputs == "features"
    assert torch.equal(again.predict(big[0], big[1], [text], [m])["success"], out["success"])


def test_features_only_needs_grounding():
    with pytest.raises(ValueError, match="grounding"):
        SFRewardConfig(region_inputs="features")
    with pytest.raises(ValueError, match="region_inputs"):
        SFRewardConfig(grounding=True, region_inputs="tokens")


def test_version_2_features_measure_completion_and_the_best_match():
    from sfreward.model.grounding import N_COMPLETION
    src = torch.zeros(2, 3, 32, 32)
    src[:, :, :, :] = torch.tensor([0.2, 0.2, 0.6])[:, None, None]     # dark blue everywhere
    edt = src.clone()
    edt[0, :, :12, :12] = 0.6 + 0.4 * src[0, :, :12, :12]               # image 0: top-left brightened
    edt[1, :, :12, :12] = src[1, :, :12, :12] * 0.5                     # image 1: darkened instead
    masks = torch.zeros(4, 32, 32)
    masks[[0, 2], :12, :12] = 1
    masks[[1, 3], 20:, 20:] = 1
    idx = torch.tensor([0, 0, 1, 1])
    s, e, c = region_geometry(masks, idx, src, edt)
    text = "Brighten the blue region in the upper left."
    f = grounding_features([text, text], s, e, c, idx, completion=True)
    assert f.shape == (4, N_GROUNDING + N_COMPLETION)
    done, rel, best = f[:, -3], f[:, -2], f[:, -1]
    # brightened from value 0.6 to 0.84 of a headroom of 0.4: ~60% done; darkened: negative
    assert 0.45 < float(done[0]) < 0.75 and float(done[2]) < -0.5 and float(done[1]) == 0.0
    # the top-left region is the best match in each image, by its own image's regions only
    assert best.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert float(rel[0]) == 0.0 and float(rel[1]) > 0.5
    assert torch.equal(f[:, :N_GROUNDING], grounding_features([text, text], s, e, c, idx))


def test_version_3_features_tell_the_asked_colour_from_a_wrong_or_partial_one():
    """Three recolours of the same region of a real photo to the asked blue: done fully, done
    half way, and to yellow instead. The share at the asked hue and the colour word tell them
    apart; the per-operation completion puts a recolour in the recolour column only."""
    from skimage import data
    from sfreward.model.grounding import N_COMPLETION, N_INTENT, _hsv, target_hue_maps
    from sfreward.model.regionstats import pool_regions
    photo = torch.from_numpy(data.astronaut()[::8, ::8].copy()).permute(2, 0, 1).float() / 255   # [3, 64, 64]
    src = photo[None].repeat(4, 1, 1, 1)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[8:40, 8:40] = True

    def recolour(img: torch.Tensor, hue_deg: float) -> torch.Tensor:
        # hue set, saturation and value raised to a visible colour (the demo's editor does the same)
        _, s, v = _hsv(img[None])
        s, v = s[0].clamp_min(0.65), v[0].clamp_min(0.35)
        h = torch.full_like(s, hue_deg / 60.0)
        k = lambda n: (n + h) % 6
        f = lambda n: v - v * s * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)
        return torch.stack([f(5), f(3), f(1)])
    blue, yellow = recolour(photo, 225), recolour(photo, 55)
    edt = src.clone()
    edt[0][:, mask] = blue[:, mask]                                   # done
    edt[1][:, mask] = (0.5 * photo + 0.5 * blue)[:, mask]             # half way
    edt[2][:, mask] = yellow[:, mask]                                 # wrong colour
    masks = mask[None].repeat(4, 1, 1).float()
    idx = torch.arange(4)
    texts = ["Make the region in the upper left blue."] * 3 + ["Brighten the region in the upper left."]
    share = pool_regions(target_hue_maps(texts, src, edt), masks, idx)
    s, e, c = region_geometry(masks, idx, src, edt)
    f = grounding_features(texts, s, e, c, idx, completion=True, hue_share=share)
    assert f.shape == (4, N_GROUNDING + N_COMPLETION + N_INTENT)
    v2 = grounding_features(texts, s, e, c, idx, completion=True)
    assert torch.equal(f[:, :v2.shape[1]], v2)                        # version 3 extends version 2
    by_op, at_hue, gain, reads = f[:, -8:-4], f[:, -4], f[:, -3], f[:, -2]
    assert float(at_hue[0]) > 0.95 and float(gain[0]) > 0.8 and float(reads[0]) == 1.0
    assert 0.05 < float(at_hue[1]) < float(at_hue[0]) - 0.2          # partial: part of the region
    assert float(at_hue[2]) < 0.05 and float(reads[2]) == 0.0         # wrong colour: none
    assert by_op[0, 0] > 0.3 and float(by_op[0, 1:].abs().max()) == 0.0
    # no target colour (a tone instruction): hue terms are zero
    assert float(share[3].abs().max()) == 0.0 and float(reads[3]) == 0.0
    with pytest.raises(ValueError, match="completion"):
        grounding_features(texts, s, e, c, idx, hue_share=share)


def test_version_4_reads_brighten_and_darken_on_lightness():
    """Brightening a saturated blue region the way editors do (towards white) raises red and
    green, not the maximum channel, which is already at 1: its HSV value does not move, so
    version 3 reads it as nothing done, and a brighten made for a darken as no harm. Version 4
    reads lightness."""
    from skimage import data

    photo = torch.from_numpy(data.coffee()[::8, ::8][:48, 8:56].copy()).permute(2, 0, 1).float() / 255   # [3, 48, 48]
    sky = torch.zeros(photo.shape[1:], dtype=torch.bool)
    sky[:12, :] = True
    # A saturated blue region at full value, painted on the photo (its texture kept in red and green).
    src = photo.clone()
    src[:2, sky] = photo[:2, sky] * 0.3
    src[2, sky] = 1.0
    bright = src.clone()
    bright[:, sky] = src[:, sky] + (1 - src[:, sky]) * 0.5          # brightened half way to white
    srcs, edts = torch.stack([src, src]), torch.stack([bright, bright])
    masks, idx = sky[None].repeat(2, 1, 1).float(), torch.arange(2)
    texts = ["Brighten the region at the top.", "Darken the region at the top."]
    s, e, c = region_geometry(masks, idx, srcs, edts)
    share = torch.zeros(2, 2)
    v3 = grounding_features(texts, s, e, c, idx, completion=True, hue_share=share)
    v4 = grounding_features(texts, s, e, c, idx, completion=True, hue_share=share, lightness=True)
    assert v4.shape == v3.shape
    done3, done4 = v3[:, N_GROUNDING], v4[:, N_GROUNDING]
    assert abs(float(done3[0])) < 0.05 and 0.3 < float(done4[0]) <= 0.6   # half way to white
    assert abs(float(done3[1])) < 0.05 and float(done4[1]) < -0.5          # the opposite of a darken
    # Everything but the brighten / darken terms is the same.
    same = [i for i in range(v3.shape[1]) if not torch.allclose(v3[:, i], v4[:, i])]
    assert all(i in (10, 11, N_GROUNDING, N_GROUNDING + 3 + 1, N_GROUNDING + 3 + 2) for i in same), same
    model = SFRewardModel(SFRewardConfig(features_version=4, grounding=True, region_inputs="features"))
    _, gf = model.region_features(srcs, edts, texts, masks, idx)
    assert torch.allclose(gf[:, N_GROUNDING], done4, atol=1e-5)
