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
