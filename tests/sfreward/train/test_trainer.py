"""Trainer: config overrides, data reading, exact resume, DDP under torchrun == single process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from sfreward.train import TrainConfig, apply_overrides, load_config
from sfreward.data import RegionDataset, collate
from sfreward.train.trainer import batch_indices, train
from tests.fixtures.sfreward_data import tiny_train_config

ROOT = Path(__file__).resolve().parents[3]


def test_overrides_and_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 3e-4\nbatch_size: 4\nmodel: {hidden: 32}\n")
    cfg = load_config(tmp_path / "c.yaml", ["max_steps=7", "model.backbone=clip", "amp=false"])
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.amp) == (3e-4, 4, 7, False)
    assert cfg.model == {"hidden": 32, "backbone": "clip"}
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        apply_overrides(TrainConfig(), ["nope=1"])
    with pytest.raises(ValueError, match="lr: expected a number"):
        apply_overrides(TrainConfig(), ["lr=fast"])
    with pytest.raises(ValueError, match="label_mode"):
        TrainConfig(label_mode="pixels")


def test_dataset_reads_export_and_skips_bad_rows(sfreward_dataset, tmp_path):
    path = sfreward_dataset / "hf" / "train-00000-of-00001.parquet"
    rows = pq.read_table(path).to_pylist()[:5]
    rows[1]["edited"] = {"bytes": b"not an image", "path": None}
    rows[3]["regions"][0]["mask"] = {"size": [10, 10], "counts": "0"}  # wrong size
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), tmp_path / "train-00000-of-00001.parquet")
    ds = RegionDataset(tmp_path, "train", 32)
    assert len(ds) == 3 and [s for s, _ in ds.skipped] == [rows[1]["sample_id"], rows[3]["sample_id"]]
    assert "mask" in ds.skipped[1][1]
    b = collate([ds[0], ds[1]], ds)
    k = len(rows[0]["regions"]) + len(rows[2]["regions"])
    assert b["sources"].shape == (2, 3, 32, 32) and b["masks"].shape == (k, 32, 32)
    assert b["targets"].shape == (k, 2) and b["region_image"].tolist().count(0) == len(rows[0]["regions"])
    # masks are coverage fractions after resizing: total coverage of a partition is 1 per pixel
    assert torch.allclose(b["masks"][b["region_image"] == 0].sum(0), torch.ones(32, 32), atol=1e-5)
    # background success is not rated -> NaN survives
    assert torch.isnan(b["targets"][len(rows[0]["regions"]) - 1, 0])


def test_image_label_mode_copies_overall(sfreward_dataset):
    ds = RegionDataset(sfreward_dataset, "train", 32, label_mode="image")
    s = ds[0]
    assert torch.all(s.targets == s.image_targets[0])


def test_batch_indices_partition_the_global_batch():
    cfg = TrainConfig(batch_size=3, grad_accum=2, seed=5)
    single = TrainConfig(batch_size=6, grad_accum=2, seed=5)
    for step in (0, 1, 4):
        for micro in (0, 1):
            ranks = batch_indices(40, step, micro, cfg, 0, 2) + batch_indices(40, step, micro, cfg, 1, 2)
            assert ranks == batch_indices(40, step, micro, single, 0, 1)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        batch_indices(5, 0, 0, single, 0, 1)


def test_group_batches_keep_each_grpo_group_together():
    groups = [f"g{i % 10}" for i in range(40)]          # 10 groups of 4, interleaved in the split
    cfg = TrainConfig(batch_size=8, seed=3, group_batches=True)
    for step in (0, 3, 5, 9):                            # 5 steps per epoch: two epochs
        idx = batch_indices(40, step, 0, cfg, 0, 1, groups)
        assert len(idx) == 8 and len({groups[i] for i in idx}) == 2   # two whole groups
    order = [batch_indices(40, s, 0, cfg, 0, 1, groups) for s in range(5)]
    assert sorted(i for b in order for i in b) == list(range(40))     # an epoch visits every sample once
    assert order != [batch_indices(40, s, 0, cfg, 0, 1, groups) for s in range(5, 10)]  # reshuffled
    plain = TrainConfig(batch_size=8, seed=3)            # off: the groups are ignored
    assert batch_indices(40, 0, 0, plain, 0, 1, groups) == batch_indices(40, 0, 0, plain, 0, 1)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_resume_is_bit_identical(sfreward_dataset, tmp_path):
    kw = dict(max_steps=6, ckpt_every=2, grad_accum=2, batch_size=4, model={"dropout": 0.1})
    full = train(tiny_train_config(sfreward_dataset, tmp_path / "full", **kw))
    part = train(tiny_train_config(sfreward_dataset, tmp_path / "part", stop_after=3, **kw))
    assert part.model_dir is None and part.step == 3
    assert (tmp_path / "part" / "checkpoints" / "step-0000003.pt").is_file()
    resumed = train(tiny_train_config(sfreward_dataset, tmp_path / "part", **kw))
    assert resumed.step == 6
    a, b = _weights(full.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and training changed the weights at all
    fresh = train(tiny_train_config(sfreward_dataset, tmp_path / "one", max_steps=1, batch_size=4))
    assert not all(torch.equal(a[k], v) for k, v in _weights(fresh.model_dir).items())


def test_torchrun_two_processes_match_single_process(sfreward_dataset, tmp_path):
    """2 ranks x 4 images (gloo) == 1 process x 8 images, same global batch."""
    common = ["data_dir=" + str(sfreward_dataset), "max_steps=3", "warmup_steps=1", "ckpt_every=0",
              "eval_split=", "num_threads=1", "log_every=1", "rank_weight=1.0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = train(apply_overrides(TrainConfig(), common + ["batch_size=8", f"out_dir={tmp_path / 'single'}"]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "sfreward.train", *common, "batch_size=4", f"out_dir={tmp_path / 'ddp'}"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(single.model_dir), _weights(tmp_path / "ddp" / "model")
    # Attention key biases get an exactly-zero gradient (adding the same q.b_k to every logit of
    # a query leaves its softmax unchanged): what remains is rounding noise, which Adam scales
    # to steps of up to lr (1e-3) that differ between the two runs. They only need to stay in
    # that range; every other parameter must match closely.
    null_grad = {k for k in a if k.endswith("self_attn.k_proj.bias")}
    assert null_grad, "expected the backbone's attention key biases"
    max_diff = max(float((a[k] - b[k]).abs().max()) for k in a if k not in null_grad)
    assert max_diff < 1e-4, max_diff
    assert max(float((a[k] - b[k]).abs().max()) for k in null_grad) < 3 * 1e-3
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["step"] == 3 and not (tmp_path / "ddp" / "checkpoints").exists()


def test_weight_ema_averages_with_a_ramped_decay():
    from sfreward.train.trainer import WeightEMA
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = WeightEMA(lin, 0.9)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin, 0)                       # decay min(0.9, 1/10) = 0.1: mostly the new weights
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.9))
    ema.update(lin, 1000)                    # decay 0.9 from now on: 0.9 + 0.1 x (1 - 0.9)
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.91))
    ema.copy_to(lin)
    assert torch.allclose(lin.weight, torch.full((1, 2), 0.91))


def test_ema_weights_are_saved_and_resume_bit_identically(sfreward_dataset, tmp_path):
    kw = dict(max_steps=6, ckpt_every=2, batch_size=4, ema_decay=0.5)
    full = train(tiny_train_config(sfreward_dataset, tmp_path / "full", **kw))
    part = train(tiny_train_config(sfreward_dataset, tmp_path / "part", stop_after=3, **kw))
    assert part.step == 3
    resumed = train(tiny_train_config(sfreward_dataset, tmp_path / "part", **kw))
    a, b = _weights(full.model_dir), _weights(resumed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = _weights(train(tiny_train_config(sfreward_dataset, tmp_path / "plain", **{**kw, "ema_decay": 0.0})).model_dir)
    assert any(not torch.equal(a[k], plain[k]) for k in a)   # the saved weights are the average
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
