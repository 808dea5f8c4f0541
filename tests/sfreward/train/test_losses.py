"""Region-loss weighting of bad regions (TrainConfig.bad_weight, sfreward.train.losses)."""
import math

import pytest
import torch

from sfreward.train import losses
from sfreward.train.config import TrainConfig


def test_bad_region_weight_uses_phi_of_the_targets():
    # success, preserve on 0..25; NaN success = background (judged on preserve alone)
    t = torch.tensor([[3.0, 24.0],            # failed edit: phi 3 -> bad
                      [22.0, 10.0],           # damage: phi 10 -> bad
                      [20.0, 20.0],           # good
                      [float("nan"), 5.0],    # damaged background -> bad
                      [float("nan"), 25.0],   # intact background -> good
                      [12.5, 25.0]])          # at the threshold: not bad
    w = losses.bad_region_weight(t, 4.0)
    assert w.tolist() == [4.0, 4.0, 1.0, 4.0, 1.0, 1.0]


def test_weighted_nll_is_a_weighted_mean():
    mu = torch.tensor([0.5, 0.5, 0.5])
    logvar = torch.zeros(3)
    target = torch.tensor([0.0, 25.0, float("nan")])
    s, n = losses.gaussian_nll_sum(mu, logvar, target, 0.0)
    assert n == 2 and math.isclose(float(s), 0.25, rel_tol=1e-6)      # 2 x 0.5 x 0.5^2
    ws, wn = losses.gaussian_nll_sum(mu, logvar, target, 0.0, torch.tensor([3.0, 1.0, 5.0]))
    assert float(wn) == 4.0 and math.isclose(float(ws), 4 * 0.125, rel_tol=1e-6)  # NaN row: no weight
    # weight 1 everywhere: the unweighted loss
    s1, n1 = losses.gaussian_nll_sum(mu, logvar, target, 0.0, torch.ones(3))
    assert float(s1) == float(s) and float(n1) == float(n)


def test_bad_weight_must_be_positive():
    with pytest.raises(ValueError, match="bad_weight"):
        TrainConfig(bad_weight=0.0)


def test_localization_rank_pairs_regions_of_one_image_by_phi():
    nan = float("nan")
    # image 0: an intact context region, a damaged one, an intact background; image 1: two regions
    t = torch.tensor([[24.0, 24.0], [20.0, 5.0], [nan, 25.0],
                      [20.0, 20.0], [nan, 21.0]])
    img = torch.tensor([0, 0, 0, 1, 1])
    s = torch.tensor([0.9, 0.9, 0.5, 0.8, 0.5], requires_grad=True)
    p = torch.tensor([0.9, 0.95, 0.9, 0.8, 0.8], requires_grad=True)
    loss, count, report = losses.localization_rank(s, p, t, img, margin=2.5, scale=10.0)
    # pairs: (0 > 1) and (2 > 1) in image 0; image 1's gap (1) is under the margin; none across images
    assert float(count) == 2
    # predicted phi: 0.9, 0.9 (min of 0.9, 0.95), 0.9 (background: preserve alone)
    assert math.isclose(float(loss.detach()), 2 * math.log(2), rel_tol=1e-5)
    assert math.isclose(float(report), float(loss.detach()), rel_tol=1e-6)
    loss.backward()
    # the damaged region is pushed down through its binding score (success 0.9 < preserve 0.95)
    assert float(s.grad[1]) > 0 and float(p.grad[1]) == 0
    assert float(p.grad[0]) < 0 or float(s.grad[0]) < 0   # the good one is pushed up
    assert float(s.grad[2]) == 0 and float(p.grad[2]) < 0  # background: preserve alone
    assert float(s.grad[3]) == 0 and float(s.grad[4]) == 0


def test_localization_rank_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="loc_rank_weight"):
        TrainConfig(loc_rank_weight=-1.0)
