"""The trainer and evaluation read a real curation export (warehouse.curation.export_hf),
not only the synthetic fixture: the parquet contract between the two helpers' code."""
from __future__ import annotations

import pytest
import torch

from sfreward import registry
from sfreward.train import TrainConfig, train_and_register
from tests.fixtures.curation import make_annotated_warehouse
from warehouse.curation import CurationConfig, build_dataset, export_hf
from warehouse.workspace import Workspace


def test_train_and_register_on_a_curation_export(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    torch.set_num_threads(1)
    ws = Workspace.open(tmp_path / "home")
    make_annotated_warehouse(ws, n_samples=24, n_annotators=3, noise=0.4, seed=0)
    v = build_dataset(ws, CurationConfig(dedupe_hamming=-1, fractions=(0.5, 0.25, 0.25)))
    export_hf(ws, v.dataset_id)
    cfg = TrainConfig(batch_size=4, max_steps=3, warmup_steps=1, eval_split="", num_threads=1,
                      model={"image_size": 64})
    mid = train_and_register(ws, v.dataset_id, cfg)
    rec = registry.get_model(ws, mid)
    assert rec["dataset_id"] == v.dataset_id and rec["metrics"]["n_skipped"] == 0
    assert rec["metrics"]["n_train"] == v.split_counts["train"]
    [ev] = rec["evaluations"]
    assert ev["split"] == "test" and ev["metrics"]["n_samples"] == v.split_counts["test"]
    assert ev["metrics"]["n_regions"] > ev["metrics"]["n_samples"]

    # the dataset contract names this export the current one; a rerun with `reuse` takes the
    # model trained with the same settings instead of training again (the runner must not run)
    from warehouse.datasets import current_dataset_id

    assert current_dataset_id(ws, export="hf") == v.dataset_id

    def must_not_train(cfg):
        raise AssertionError("reuse trained again")
    assert train_and_register(ws, v.dataset_id, cfg, runner=must_not_train, eval_split="", reuse=True) == mid
    changed = TrainConfig(batch_size=4, max_steps=3, warmup_steps=1, eval_split="", num_threads=1, seed=5,
                          model={"image_size": 64})
    ran = []

    def record(cfg):
        ran.append(cfg.seed)
        raise RuntimeError("stop after the decision")
    with pytest.raises(RuntimeError, match="stop after the decision"):
        train_and_register(ws, v.dataset_id, changed, runner=record, eval_split="", reuse=True)
    assert ran == [5]
