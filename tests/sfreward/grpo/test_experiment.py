"""`sfr experiment grpo --quick` end to end: a registered SFReward served by `sfr serve` (a real
subprocess on 127.0.0.1), both arms, ground-truth evaluation, the report."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sfreward.experiments.grpo_data import build_prompts, oracle


@pytest.fixture(scope="module")
def prompts():
    return build_prompts(32, 0, 2, 1)


def test_oracle_scores_ideal_and_source(prompts):
    pre, train, held = prompts
    p = held[0]
    assert p.kind == "heldout" and p.targets.sum() == 1 and not any("chelsea" in q.name or "retina" in q.name for q in pre)
    ideal, src = oracle(p, p.ideal), oracle(p, p.source)
    assert ideal["success"] == pytest.approx(25.0) and ideal["preserve"] == pytest.approx(25.0)
    assert src["success"] == pytest.approx(0.0) and src["preserve"] == pytest.approx(25.0)
    assert ideal["oracle_reward"] == pytest.approx(1.0) and src["oracle_reward"] < 1.0


def _sfr(home, *args, timeout=900):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "--home", str(home), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_cli_says_what_to_do_without_a_registered_model(tmp_path):
    (tmp_path / "home").mkdir()
    r = _sfr(tmp_path / "home", "experiment", "grpo", "--quick", "--out", str(tmp_path / "out"))
    assert r.returncode != 0
    assert "sfr demo" in r.stderr and "sfr train" in r.stderr, r.stderr


@pytest.mark.slow
def test_quick_experiment_end_to_end(grpo_home, tmp_path):
    out = tmp_path / "report"
    r = _sfr(grpo_home, "experiment", "grpo", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "grpo_experiment.json").read_text())
    assert {x["arm"] for x in res["runs"]} == {"whole", "region"}
    assert res["model"]["served_version"]["model_version"].startswith(res["model"]["model_id"][:10]) or \
        res["model"]["model_id"] in json.dumps(res["model"]["served_version"])
    for run in res["runs"]:
        for ev in run["evals"]:
            assert set(ev) == {"train", "heldout", "multiedit"}
            for s in ev.values():
                assert 0 <= s["success"] <= 25 and 0 <= s["preserve"] <= 25
                assert 0 <= s["learned_reward"] <= 1 and np.isfinite(s["divergence"])
    md = (out / "grpo_experiment.md").read_text()
    assert "## multiedit" in md and "region - whole" in md
    assert (out / "grpo_experiment.png").stat().st_size > 10_000 and (out / "grpo_examples.png").stat().st_size > 5_000


def test_policy_pretraining_is_cached_by_content_hash(tmp_path, prompts):
    from sfreward.experiments.grpo_data import pairs_tensor
    from sfreward.grpo.policy import PolicyConfig, cached_policy

    pairs = pairs_tensor(prompts[0][:4])
    cfg = PolicyConfig(channels=(8, 16), pretrain_steps=2, batch_size=2)
    a, key, cached = cached_policy(cfg, pairs, tmp_path)
    b, key2, cached2 = cached_policy(cfg, pairs, tmp_path)
    assert (cached, cached2) == (False, True) and key == key2
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    pairs["instruction"][0] = "something else"
    assert cached_policy(cfg, pairs, tmp_path)[1] != key    # other data -> other hash
