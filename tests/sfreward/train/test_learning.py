"""Learning test: with region labels, a few minutes of CPU training localize the damaged
region on held-out photos (localization AUROC >= 0.9). The whole-image-labels comparison is a
benchmark figure (benchmarks/bench_sfreward.py), not an assertion."""
from __future__ import annotations

import pytest

from sfreward import evaluate as ev
from sfreward.model import SFRewardModel
from sfreward.train.trainer import train
from tests.fixtures.sfreward_data import tiny_train_config, write_dataset


@pytest.mark.slow
def test_region_labels_learn_localization(tmp_path):
    data = write_dataset(tmp_path / "ds", n_train=100, n_val=2, n_test=20)
    res = train(tiny_train_config(data, tmp_path / "run", max_steps=600, batch_size=8, lr=1e-3,
                                  warmup_steps=10))
    m = ev.evaluate(SFRewardModel.from_pretrained(res.model_dir), data, "test")
    assert m["n_localization"] >= 30
    assert m["localization_auroc"] >= 0.9, m
