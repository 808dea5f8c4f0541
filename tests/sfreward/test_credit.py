"""sfreward.credit: hand-computed small cases, Flow-GRPO equivalence, gradient locality."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from sfreward.credit import (
    flow_grpo_loss,
    region_advantages,
    region_weighted_loss,
    token_advantages,
    token_coverage,
)

F64 = torch.float64


def t(x, dtype=F64):
    return torch.tensor(x, dtype=dtype)


# --------------------------------------------------------------------------- region_advantages
def test_region_advantages_hand_computed_group_std():
    # region 0: [0, 0, 2, 2] -> mean 1, pop std 1; region 1: [0, 4, 0, 4] -> mean 2, std 2
    r = t([[0, 0], [0, 4], [2, 0], [2, 4]])
    out = region_advantages(r, eps=0.0)
    assert_close(out.advantages, t([[-1, -1], [-1, 1], [1, -1], [1, 1]]))
    assert out.mask.all() and not out.fallback.any()


def test_region_advantages_eps_and_clip():
    # nine 0s and one 10: mean 1, std 3 -> advantages -1/3 (x9) and 3
    r = t([0] * 9 + [10]).reshape(10, 1)
    out = region_advantages(r)  # default eps 1e-4, clip 5
    assert_close(out.advantages[:, 0], t([-1 / 3.0001] * 9 + [9 / 3.0001]))
    clipped = region_advantages(r, clip=2.0, eps=0.0).advantages[:, 0]
    assert_close(clipped, t([-1 / 3] * 9 + [2.0]))


def test_region_advantages_global_std_pools_groups_and_regions():
    r = t([[0, 0], [2, 4]])
    # all four values [0, 0, 2, 4]: mean 1.5, variance (2.25+2.25+0.25+6.25)/4 = 2.75
    s = math.sqrt(2.75)
    out = region_advantages(r, std="global", eps=0.0)
    assert_close(out.advantages, t([[-1 / s, -2 / s], [1 / s, 2 / s]]))
    # group std: each region normalized by its own spread
    assert_close(region_advantages(r, std="group", eps=0.0).advantages, t([[-1, -1], [1, 1]]))


def test_region_advantages_invalid_entries_excluded_not_zero():
    r = t([[0.0], [2.0], [float("nan")], [100.0]])
    valid = torch.tensor([[True], [True], [True], [False]])   # NaN is invalid even if flagged valid
    out = region_advantages(r, valid, eps=0.0)
    # stats over {0, 2} only: mean 1, std 1. (Counting invalid as 0 reward would give mean 0.5.)
    assert_close(out.advantages[:, 0], t([-1, 1, 0, 0]))
    assert out.mask[:, 0].tolist() == [True, True, False, False]
    assert torch.isfinite(out.advantages).all()


def test_region_advantages_zero_spread_falls_back_to_image_advantage():
    r = t([[0, 0.5], [0, 0.5], [2, 0.5], [2, 0.5]])
    # derived image reward = mean over regions = [.25, .25, 1.25, 1.25] -> mean .75, std .5
    out = region_advantages(r, eps=0.0)
    assert_close(out.advantages, t([[-1, -1], [-1, -1], [1, 1], [1, 1]]))
    assert out.fallback[:, 1].all() and not out.fallback[:, 0].any()
    # explicit image rewards [1, 3, 1, 3] -> [-1, 1, -1, 1] for the zero-spread region only
    out = region_advantages(r, image_rewards=t([1, 3, 1, 3]), eps=0.0)
    assert_close(out.advantages[:, 1], t([-1, 1, -1, 1]))
    assert_close(out.advantages[:, 0], t([-1, -1, 1, 1]))


def test_region_advantages_single_valid_entry_and_invalid_image_reward():
    r = t([[0, 7.0], [2, 9.0], [4, 1.0]])
    valid = torch.tensor([[True, True], [True, False], [True, False]])
    img = t([1.0, float("nan"), 3.0])  # rollout 1's whole-image reward is missing
    out = region_advantages(r, valid, image_rewards=img, eps=0.0)
    # region 1 has one valid entry -> zero spread -> rollout 0's image advantage:
    # image rewards {1, 3} (rollout 1 invalid) -> mean 2, std 1 -> rollout 0: -1
    assert_close(out.advantages[:, 1], t([-1, 0, 0]))
    assert out.mask[:, 1].tolist() == [True, False, False]
    assert out.fallback[:, 1].tolist() == [True, False, False]
    # region 0 is unaffected by the image rewards: [0, 2, 4] -> mean 2, std sqrt(8/3)
    s = math.sqrt(8 / 3)
    assert_close(out.advantages[:, 0], t([-2 / s, 0, 2 / s]))


def test_region_advantages_zero_spread_image_gives_zero_advantage_with_mask():
    r = t([[1.0], [1.0], [1.0]])
    out = region_advantages(r)
    assert_close(out.advantages, torch.zeros(3, 1, dtype=F64))
    assert out.mask.all() and out.fallback.all()


def test_region_advantages_batched_matches_per_group():
    g0 = t([[0, 0], [0, 4], [2, 0], [2, 4]])
    g1 = t([[5, 1], [5, 1], [5, 3], [9, 3]])
    v1 = torch.tensor([[True, True], [True, True], [True, True], [False, True]])
    rb = torch.stack([g0, g1])
    vb = torch.stack([torch.ones_like(v1), v1])
    out = region_advantages(rb, vb, eps=0.0)
    assert out.advantages.shape == (2, 4, 2)
    ref0 = region_advantages(g0, eps=0.0)
    ref1 = region_advantages(g1, v1, eps=0.0)
    assert_close(out.advantages[0], ref0.advantages)
    assert_close(out.advantages[1], ref1.advantages)
    # group 1 by hand: region 0 valid {5, 5, 5} has zero spread -> image advantage; derived
    # image rewards [3, 3, 4, 3] (rollout 3: region 1 only) -> mean 3.25, std sqrt(3/16)
    s = math.sqrt(3 / 16)
    assert_close(out.advantages[1, :3, 0], t([-0.25 / s, -0.25 / s, 0.75 / s]))
    assert not out.mask[1, 3, 0]
    # region 1: [1, 1, 3, 3] -> [-1, -1, 1, 1]
    assert_close(out.advantages[1, :, 1], t([-1, -1, 1, 1]))


def test_region_advantages_bad_input():
    with pytest.raises(ValueError, match="valid"):
        region_advantages(torch.zeros(3, 2), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="std"):
        region_advantages(torch.zeros(3, 2), std="batch")
    with pytest.raises(ValueError, match="image_rewards"):
        region_advantages(torch.zeros(3, 2), image_rewards=torch.zeros(2))
    with pytest.raises(ValueError, match="rewards"):
        region_advantages(torch.zeros(3))


# --------------------------------------------------------------------------- token_coverage
def test_token_coverage_hand_computed_with_background():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, :3, :3] = True
    cov = token_coverage(m, token_px=2, background=True)
    assert cov.shape == (2, 2, 2) and cov.dtype == torch.float32
    assert_close(cov[0], torch.tensor([[1.0, 0.5], [0.5, 0.25]]))
    assert_close(cov[1], torch.tensor([[0.0, 0.5], [0.5, 0.75]]))


def test_token_coverage_background_is_one_minus_union_for_overlaps():
    m = torch.zeros(2, 2, 2, dtype=torch.bool)
    m[0, 0, :] = True       # top row
    m[1, :, 0] = True       # left column (overlaps at (0, 0))
    cov = token_coverage(m, token_px=2, background=True)
    assert_close(cov[:, 0, 0], torch.tensor([0.5, 0.5, 0.25]))  # union 3 of 4 pixels


def test_token_coverage_non_divisible_crop_and_pad():
    # 5 x 3 pixels, t = 2; region covers column 2 (x = 2) and row 4 (y = 4)
    m = torch.zeros(1, 5, 3, dtype=torch.bool)
    m[0, :, 2] = True
    m[0, 4, :] = True
    crop = token_coverage(m, token_px=2, remainder="crop")
    assert crop.shape == (1, 2, 1)          # rows 0-3, column 0-1 kept: nothing covered
    assert_close(crop[0], torch.zeros(2, 1))
    pad = token_coverage(m, token_px=2, remainder="pad", background=True)
    assert pad.shape == (2, 3, 2)
    # column tokens: x in {0,1} (2 px wide) and {2} (1 px); row tokens y {0,1},{2,3},{4}
    assert_close(pad[0], torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]]))
    assert_close(pad[0] + pad[1], torch.ones(3, 2))
    # a non-divisible size in crop mode equals cropping the pixels first
    big = torch.rand(3, 37, 50) > 0.5
    assert_close(token_coverage(big, 16), token_coverage(big[:, :32, :48], 16))


def test_token_coverage_batched_int_masks_and_errors():
    m = torch.zeros(2, 1, 4, 4, dtype=torch.int64)
    m[1, 0, :2, :2] = 1
    cov = token_coverage(m, token_px=2)
    assert cov.shape == (2, 1, 2, 2)
    assert_close(cov[1, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert cov[0].sum() == 0
    # no regions at all: the background channel covers everything
    assert_close(token_coverage(torch.zeros(0, 4, 4, dtype=torch.bool), 2, background=True), torch.ones(1, 2, 2))
    with pytest.raises(TypeError, match="masks"):
        token_coverage(torch.rand(1, 4, 4), 2)
    with pytest.raises(ValueError, match="smaller than one"):
        token_coverage(torch.ones(1, 8, 40, dtype=torch.bool), 16)
    with pytest.raises(ValueError, match="remainder"):
        token_coverage(torch.ones(1, 4, 4, dtype=torch.bool), 2, remainder="resize")


@pytest.mark.parametrize("tp", [16, 8, 5])
def test_token_coverage_matches_average_pooling(tp):
    # the fast integer path (t multiple of 8) and the generic one against float avg pooling
    g = torch.Generator().manual_seed(tp)
    m = torch.rand(3, 67, 90, generator=g) > 0.4
    cov = token_coverage(m, tp, background=True)
    ref = torch.nn.functional.avg_pool2d(m.float()[:, None], tp)[:, 0]
    bg = torch.nn.functional.avg_pool2d((~m.any(0)).float()[None, None], tp)[0]
    assert_close(cov, torch.cat([ref, bg]))


# --------------------------------------------------------------------------- token_advantages
def test_token_advantages_hand_computed_and_mask():
    cov = torch.tensor([[[1.0, 0.25]], [[0.0, 0.75]]])      # [K=2, h=1, w=2]
    adv = t([[2.0, -2.0]])
    assert_close(token_advantages(adv, cov), t([[2.0, 0.25 * 2 - 0.75 * 2]]))
    mask = torch.tensor([[True, False]])
    assert_close(token_advantages(adv, cov, mask), t([[2.0, 2.0]]))
    # no region covers token 1 once region 0 is masked too -> 0
    mask = torch.tensor([[False, True]])
    assert_close(token_advantages(adv, cov, mask), t([[0.0, -2.0]]))


def test_token_advantages_row_major_order_matches_pixel_formula():
    H, W, tp = 48, 64, 16
    m = torch.zeros(1, H, W, dtype=torch.bool)
    x, y = 20, 40
    m[0, y, x] = True
    out = token_advantages(t([[3.0]]), token_coverage(m, tp))
    n = (y // tp) * (W // tp) + x // tp
    assert out.shape == (1, (H // tp) * (W // tp))
    assert out[0].nonzero().flatten().tolist() == [n]
    assert out[0, n] == 3.0


def test_token_advantages_batched():
    cov = torch.rand(2, 3, 2, 2, dtype=F64)
    adv = torch.randn(2, 4, 3, dtype=F64)
    out = token_advantages(adv, cov)
    assert out.shape == (2, 4, 4)
    for b in range(2):
        assert_close(out[b], token_advantages(adv[b], cov[b]))
    # dense formula at one entry
    c = cov[1].flatten(1)
    assert_close(out[1, 2, 3], (c[:, 3] * adv[1, 2]).sum() / c[:, 3].sum())


# --------------------------------------------------------------------------- losses
def direct_flow_grpo(raw_new, raw_old, adv, clip_range, adv_clip_max=5.0):
    """Flow-GRPO's training step written out: raw log-densities [G, T, N, C], log_prob is the
    mean over all latent dims, one loss per timestep j, averaged over the steps."""
    log_prob = raw_new.mean(dim=(2, 3))
    old = raw_old.mean(dim=(2, 3))
    losses = []
    for j in range(raw_new.shape[1]):
        a = torch.clamp(adv, -adv_clip_max, adv_clip_max)
        ratio = torch.exp(log_prob[:, j] - old[:, j])
        unclipped_loss = -a * ratio
        clipped_loss = -a * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
        losses.append(torch.mean(torch.maximum(unclipped_loss, clipped_loss)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("with_t", [True, False])
def test_single_region_loss_equals_flow_grpo(with_t):
    g = torch.Generator().manual_seed(0)
    G, T, h, w, C = 6, 3 if with_t else 1, 4, 5, 8
    raw_old = torch.randn(G, T, h * w, C, generator=g, dtype=F64) * 0.1
    raw_new = (raw_old + torch.randn(G, T, h * w, C, generator=g, dtype=F64) * 0.3).requires_grad_(True)
    adv = torch.randn(G, generator=g, dtype=F64) * 4  # some beyond +-5 to exercise the clamp
    adv[0] = 7.0
    ref = direct_flow_grpo(raw_new, raw_old, adv, 0.2)
    (g_ref,) = torch.autograd.grad(ref, raw_new)

    l_new, l_old = raw_new.mean(-1), raw_old.mean(-1)           # channel mean only
    if not with_t:
        l_new, l_old = l_new[:, 0], l_old[:, 0]
    whole = torch.ones(1, h * 16, w * 16, dtype=torch.bool)
    for cov, weights in [
        (token_coverage(whole, 16), "area"),
        (token_coverage(whole, 16), "uniform"),
        (token_coverage(whole, 16, background=True), "area"),   # empty background drops out
        (torch.ones(1, h * w, dtype=F64), torch.tensor([3.0])),
    ]:
        K = cov.shape[0]
        loss = region_weighted_loss(l_new, l_old, cov, adv[:, None].expand(G, K), 0.2, weights)
        assert_close(loss, ref)
        (g_loss,) = torch.autograd.grad(loss, raw_new)
        assert_close(g_loss, g_ref)
    assert_close(flow_grpo_loss(raw_new.mean((2, 3)), raw_old.mean((2, 3)), adv, 0.2), ref)


def test_region_weighted_loss_hand_computed():
    cov = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])     # [K=2, N=3]
    old = torch.zeros(1, 3, dtype=F64)
    new = t([[math.log(2.0), math.log(2.0), 0.0]])              # rho_0 = 2, rho_1 = 1
    adv = t([[1.0, -1.0]])
    # region 0: min(2 * 1, 1.2 * 1) = 1.2; region 1: min(-1, -1) = -1
    assert_close(region_weighted_loss(new, old, cov, adv, 0.2, "uniform"), t(-(0.5 * 1.2 - 0.5)))
    assert_close(region_weighted_loss(new, old, cov, adv, 0.2, "area"), t(-(2 / 3 * 1.2 - 1 / 3)))
    assert_close(region_weighted_loss(new, old, cov, adv, 0.2, torch.tensor([1.0, 3.0])),
                 t(-(0.25 * 1.2 - 0.75)))
    # a masked region drops out and the rest is renormalized
    mask = torch.tensor([[False, True]])
    assert_close(region_weighted_loss(new, old, cov, adv, 0.2, "area", mask=mask), t(1.0))
    # a rollout with no region left contributes nothing (G' = 1, not 2)
    new2, old2 = torch.cat([new, new]), torch.cat([old, old])
    adv2 = torch.cat([adv, adv])
    mask2 = torch.tensor([[True, True], [False, False]])
    assert_close(region_weighted_loss(new2, old2, cov, adv2, 0.2, "uniform", mask=mask2),
                 t(-(0.5 * 1.2 - 0.5)))


def test_gradient_flows_only_through_covered_tokens():
    g = torch.Generator().manual_seed(1)
    H = W = 64
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, :16, :32] = True      # tokens 0, 1
    masks[1, 40:, 40:] = True      # tokens 10, 11, 14, 15 (partially 10, 11, 14)
    cov = token_coverage(masks, 16)                      # no background channel
    covered = cov.flatten(1).sum(0) > 0
    G, T, N = 3, 2, 16
    old = torch.randn(G, T, N, generator=g, dtype=F64)
    new = (old + 0.1 * torch.randn(G, T, N, generator=g, dtype=F64)).requires_grad_(True)
    adv = t([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.3]])
    loss = region_weighted_loss(new, old, cov, adv, 0.2)
    (grad,) = torch.autograd.grad(loss, new)
    assert covered.sum() == 6
    assert (grad[..., ~covered] == 0).all()
    assert (grad[..., covered] != 0).all()
    # masking region 1 for every rollout removes its tokens' gradient too
    mask = torch.tensor([[True, False]] * G)
    (grad,) = torch.autograd.grad(region_weighted_loss(new, old, cov, adv, 0.2, mask=mask), new)
    region1 = cov[1].flatten() > 0
    assert (grad[..., region1] == 0).all() and (grad[..., ~region1 & covered] != 0).all()


def test_per_rollout_coverage_and_errors():
    g = torch.Generator().manual_seed(2)
    cov = torch.rand(2, 2, 2, 3, generator=g, dtype=F64)   # [G, K, h, w]
    new, old = torch.randn(2, 6, generator=g, dtype=F64), torch.randn(2, 6, generator=g, dtype=F64)
    adv = t([[1.0, -1.0], [0.5, 2.0]])
    loss = region_weighted_loss(new, old, cov, adv, 0.2)
    per = [region_weighted_loss(new[i:i + 1], old[i:i + 1], cov[i], adv[i:i + 1], 0.2) for i in range(2)]
    assert_close(loss, (per[0] + per[1]) / 2)
    with pytest.raises(ValueError, match="coverage"):
        region_weighted_loss(new, old, torch.rand(2, 5), adv, 0.2)
    with pytest.raises(ValueError, match="region_weights"):
        region_weighted_loss(new, old, cov, adv, 0.2, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="logp_new"):
        region_weighted_loss(new, old[:, :5], cov, adv, 0.2)


@pytest.mark.parametrize("t", [4, 8, 16, 32])
def test_coverage_fast_paths_equal_average_pooling(t):
    # The int64-lane path (t = 8, 16) must count every pixel of full, empty and random tokens,
    # including the full 16 x 16 token whose lane sums set the sign bit.
    g = torch.Generator().manual_seed(t)
    m = torch.rand(5, 4 * t, 6 * t, generator=g) < torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0])[:, None, None]
    ref = torch.nn.functional.avg_pool2d(m.float()[:, None], t)[:, 0]
    assert torch.equal(token_coverage(m, t), ref)
    bg = 1 - torch.nn.functional.avg_pool2d(m.any(0).float()[None, None], t)[0]
    assert torch.equal(token_coverage(m, t, background=True)[-1:], bg)
