"""The spatial-credit experiment runs end to end for a few steps and reports what it measured."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sfreward.experiments.credit import (ARMS, ExperimentConfig, make_prompts, region_quality, render,
                                         run_credit_experiment, train_arm)

SMALL = dict(n_prompts=2, n_heldout=1, image_size=32, token_px=4, group_size=4, eval_every=3, data_seed=0)


def test_few_steps_write_table_plot_and_json(tmp_path):
    cfg = ExperimentConfig(steps=4, seeds=[0, 1], **SMALL)
    res = run_credit_experiment(cfg, tmp_path)
    assert {r["arm"] for r in res["runs"]} == set(ARMS) and len(res["runs"]) == 2 * len(ARMS)
    for r in res["runs"]:
        assert r["steps"] == [0, 3, 4] and len(r["eval_reward"]) == 3 and len(r["sample_reward"]) == 4
        assert all(0.0 <= v <= 1.0 for v in r["eval_reward"] + r["sample_reward"])
        assert 0 <= r["final"]["edit_success"] <= 25 and 0 <= r["final"]["background_preserve"] <= 25
    # Same seed, same initial weights: every arm starts from the same evaluation.
    for seed in (0, 1):
        starts = {r["eval_reward"][0] for r in res["runs"] if r["seed"] == seed}
        assert len(starts) == 1
    md = (tmp_path / "credit_experiment.md").read_text()
    assert "| final eval reward (0..1) |" in md and "Reading" in md and "region_area" in md
    assert Image.open(tmp_path / "credit_experiment.png").size[0] > 500
    saved = json.loads((tmp_path / "credit_experiment.json").read_text())
    assert saved["summary"]["whole"]["n_seeds"] == 2


def test_rewards_are_region_true():
    cfg = ExperimentConfig(**SMALL)
    p = make_prompts(cfg, 2, 0)
    h = cfg.image_size // cfg.token_px
    zero = torch.zeros(2, 1, 3, h, h)
    phi = region_quality(p, render(p, zero, cfg.token_px))[:, 0]
    assert torch.all(phi[:, 0] == 0) and torch.all(phi[:, 1:][p.valid[:, 1:]] == 25)
    # The ideal image itself scores 25 everywhere it is defined.
    ideal = region_quality(p, p.ideal[:, None])[:, 0]
    assert torch.allclose(ideal[p.valid], torch.full_like(ideal[p.valid], 25.0))


def test_region_credit_learns_in_a_few_dozen_steps():
    cfg = ExperimentConfig(steps=30, seeds=[0], **{**SMALL, "eval_every": 30})
    p = make_prompts(cfg, cfg.n_prompts, 0)
    run = train_arm("region", 0, cfg, p, p)
    assert run["eval_reward"][-1] > run["eval_reward"][0] + 0.05, run["eval_reward"]


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of token_px"):
        run_credit_experiment(ExperimentConfig(image_size=30, token_px=4), tmp_path)
    with pytest.raises(ValueError, match="group_size"):
        run_credit_experiment(ExperimentConfig(group_size=1), tmp_path)


def test_cli_runs_the_experiment(tmp_path, capsys):
    from pipelines.cli import main
    rc = main(["--home", str(tmp_path / "home"), "experiment", "credit", "--steps", "2", "--seeds", "0",
               "--prompts", "2", "--group-size", "2", "--out", str(tmp_path / "out")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["summary"]) == set(ARMS) and (tmp_path / "out" / "credit_experiment.md").is_file()
    assert main(["experiment", "credit", "--seeds", "a,b"]) == 2
