"""Evaluation metrics: unit checks on known inputs, and a full run on the synthetic export."""
from __future__ import annotations

import numpy as np
import torch

from sfreward import evaluate as ev
from sfreward.model import SFRewardModel

torch.set_num_threads(1)


def test_pairwise_accuracy_known_pairs():
    # region key 7 in samples 0, 1, 2 with targets 20, 10, 5; predictions order 0 > 2 > 1
    pred = np.array([15.0, 3.0, 8.0, 1.0])
    target = np.array([20.0, 10.0, 5.0, np.nan])
    key = np.array([7, 7, 7, 7])
    sample = np.array([0, 1, 2, 3])
    acc, n = ev.pairwise_accuracy(pred, target, key, sample, margin=2.5)
    # pairs (0>1) right, (0>2) right, (1>2) wrong
    assert n == 3 and abs(acc - 2 / 3) < 1e-9


def test_localization_oracle_and_inverse():
    t = np.array([[np.nan, 20.0], [22.0, 21.0], [5.0, 6.0],     # sample 0: region 2 bad
                  [np.nan, 24.0], [20.0, 20.0]])                 # sample 1: nothing bad
    p = {"t_region": t, "sample": np.array([0, 0, 0, 1, 1])}
    oracle = ev._localization({**p, "success": np.nan_to_num(t[:, 0], nan=25.0), "preserve": t[:, 1]}, 12.5)
    assert oracle == {"localization_auroc": 1.0, "localization_top1": 1.0, "n_localization": 1}
    inverse = ev._localization({**p, "success": 25 - np.nan_to_num(t[:, 0], nan=0.0), "preserve": 25 - t[:, 1]}, 12.5)
    assert inverse["localization_auroc"] == 0.0 and inverse["localization_top1"] == 0.0


def test_corrupt_changes_only_the_region():
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(32, 32, dtype=torch.bool)
    m[8:20, 4:16] = True
    for kind in ev.CORRUPTIONS:
        out = ev.corrupt(img, m, kind)
        assert torch.equal(out[:, ~m], img[:, ~m])
        assert (out[:, m] - img[:, m]).abs().mean() > 0.02, kind


def test_evaluate_trained_model(sfreward_dataset, sfreward_trained_model):
    model = SFRewardModel.from_pretrained(sfreward_trained_model)
    m = ev.evaluate(model, sfreward_dataset, "test")
    assert m["n_samples"] == 24 and m["n_localization"] > 5 and m["n_pairs"] > 5 and m["n_corrupt"] >= 1
    for k in ("region_plcc_success", "region_srcc_preserve", "pairwise_accuracy", "image_plcc_overall",
              "localization_auroc", "corrupt_top1"):
        assert m[k] is not None and -1.0 <= m[k] <= 1.0, k
    # even a briefly trained model ranks the damaged region below the others more often than not
    assert m["localization_auroc"] > 0.6, m


def test_region_metrics_follow_their_definitions():
    from scipy import stats
    rng = np.random.default_rng(0)
    t = rng.uniform(15, 25, (40, 2))
    t[1::4] = rng.uniform(0, 10, (10, 2))                 # one bad region per sample of 4
    t[::4, 0] = np.nan                                    # background: success not rated
    sample = np.repeat(np.arange(10), 4)
    pred = t + rng.normal(0, 3, t.shape)
    pred[:, 0] = np.nan_to_num(pred[:, 0], nan=20.0)
    m = ev.region_metrics(pred[:, 0], pred[:, 1], t, sample)
    ok = ~np.isnan(t[:, 0])
    assert m["region_srcc_success"] == stats.spearmanr(pred[ok, 0], t[ok, 0])[0]
    assert m["region_srcc_preserve"] == stats.spearmanr(pred[:, 1], t[:, 1])[0]
    assert m["region_srcc_mean"] == (m["region_srcc_success"] + m["region_srcc_preserve"]) / 2
    assert m["n_localization"] == 10 and m == m | ev._localization(
        {"success": pred[:, 0], "preserve": pred[:, 1], "t_region": t, "sample": sample}, 12.5)
    # A constant predictor has no rank correlation and localizes at chance (ties count 1/2).
    const = ev.region_metrics(np.full(40, 12.0), np.full(40, 12.0), t, sample)
    assert np.isnan(const["region_srcc_mean"]) and const["localization_auroc"] == 0.5


def test_trained_model_beats_a_constant_predictor(sfreward_dataset, sfreward_trained_model):
    """On real photos (the synthetic export), the briefly trained model ranks regions and finds
    the bad one better than predicting the training mean everywhere."""
    from sfreward.data import RegionDataset
    model = SFRewardModel.from_pretrained(sfreward_trained_model)
    ds = RegionDataset(sfreward_dataset, "test", model.config.image_size, "region", preload=False)
    p = ev._predict_all(model, ds, 16)
    trained = ev.region_metrics(p["success"], p["preserve"], p["t_region"], p["sample"])
    train_t = ev._predict_all(model, RegionDataset(sfreward_dataset, "train", model.config.image_size), 16)["t_region"]
    mean = float(np.nanmean(train_t))                     # one value for every region and dimension
    const = ev.region_metrics(np.full(len(p["sample"]), mean), np.full(len(p["sample"]), mean),
                              p["t_region"], p["sample"])
    assert trained["n_localization"] == const["n_localization"] > 5
    assert const["localization_auroc"] == 0.5 and np.isnan(const["region_srcc_mean"])
    assert trained["localization_auroc"] > 0.6 and trained["region_srcc_mean"] > 0.2, trained
