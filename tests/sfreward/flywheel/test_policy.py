"""The flywheel's sampling policy as a plain function: ranking, ties, per-batch k, the daily
budget across batches and days, unscored rows, and its configuration (no Dagster, no I/O)."""
from __future__ import annotations

import pytest

from sfreward.flywheel import Candidate, FlywheelConfig, select

D1, D2 = "2026-11-29", "2026-11-30"


def ids(picks):
    return [p.candidate.sample_id for p in picks]


def test_top_k_by_score_with_ties_broken_by_sample_id():
    cands = [Candidate("s3", D1, 2.0), Candidate("s1", D1, 5.0), Candidate("s2", D1, 2.0),
             Candidate("s0", D1, 0.5), Candidate("s4", D1, float("nan"))]
    picks = select(cands, FlywheelConfig(daily_budget=10, k_per_batch=3), {})
    assert ids(picks) == ["s1", "s2", "s3"]           # 5.0, then the 2.0 tie in id order
    assert [p.rank for p in picks] == [1, 2, 3]
    # Input order does not matter: the same candidates reversed give the same picks.
    assert ids(select(cands[::-1], FlywheelConfig(daily_budget=10, k_per_batch=3), {})) == ids(picks)


def test_unscored_rows_are_never_taken():
    cands = [Candidate("a", D1, float("nan")), Candidate("b", D1, float("inf")), Candidate("c", D1, 0.0)]
    assert ids(select(cands, FlywheelConfig(daily_budget=10, k_per_batch=10), {})) == ["c"]


def test_daily_budget_counts_earlier_batches_and_is_per_day():
    cands = [Candidate("a", D1, 9.0), Candidate("b", D2, 8.0), Candidate("c", D1, 7.0), Candidate("d", D2, 6.0),
             Candidate("e", D2, 5.0)]
    cfg = FlywheelConfig(daily_budget=2, k_per_batch=10)
    # Day 1 already used 1 of 2 by another batch: one more from day 1 ("a"), two from day 2.
    assert ids(select(cands, cfg, {D1: 1})) == ["a", "b", "d"]
    # Day 1 spent: its rollouts are passed over, day 2's still fit.
    assert ids(select(cands, cfg, {D1: 2, D2: 1})) == ["b"]
    assert select(cands, cfg, {D1: 5, D2: 2}) == []
    assert select(cands, FlywheelConfig(daily_budget=0, k_per_batch=10), {}) == []


def test_k_caps_one_batch_even_with_budget_left():
    cands = [Candidate(f"s{i}", D1, float(i)) for i in range(6)]
    assert ids(select(cands, FlywheelConfig(daily_budget=100, k_per_batch=2), {})) == ["s5", "s4"]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="daily_budget: must be an integer >= 0"):
        FlywheelConfig(daily_budget=-1)
    with pytest.raises(ValueError, match="k_per_batch"):
        FlywheelConfig(k_per_batch=1.5)
    with pytest.raises(ValueError, match="policy: must be one of"):
        FlywheelConfig(policy="random")
    with pytest.raises(ValueError, match="project_key"):
        FlywheelConfig(project_key="x")


def test_config_from_env():
    cfg = FlywheelConfig.from_env({"SFR_FLYWHEEL_DAILY_BUDGET": "7", "SFR_FLYWHEEL_K_PER_BATCH": " 3 ",
                                   "SFR_FLYWHEEL_POLICY": "std", "SFR_FLYWHEEL_PROJECT_KEY": "captured-v1"})
    assert cfg == FlywheelConfig(daily_budget=7, k_per_batch=3, policy="std", project_key="captured-v1")
    assert FlywheelConfig.from_env({}) == FlywheelConfig()
    with pytest.raises(ValueError, match="SFR_FLYWHEEL_DAILY_BUDGET: must be an integer >= 0, got 'lots'"):
        FlywheelConfig.from_env({"SFR_FLYWHEEL_DAILY_BUDGET": "lots"})
    with pytest.raises(ValueError, match="SFR_FLYWHEEL_.*policy"):
        FlywheelConfig.from_env({"SFR_FLYWHEEL_POLICY": "newest"})
