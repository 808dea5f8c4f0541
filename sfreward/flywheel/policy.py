"""The data flywheel's sampling policy: which captured rollouts go to annotators. Plain: no I/O.

Rule (docs/serving.md, "The data flywheel"):

1. Score every rollout of one captured batch; higher = more worth a human look:
   - `std`: the serving model's predicted std (mean over regions of (success_std +
     preserve_std) / 2, on the 0..25 reward scale), recorded by the capture;
   - `disagreement`: |overall_candidate - overall_production| (0..25), both models scoring the
     same images, used when a candidate model other than production exists.
   A rollout without a finite score is never taken.
2. Rank the batch by score, highest first; ties by sample id (ascending).
3. Walk the ranking and take a rollout while the batch has taken fewer than `k_per_batch` and
   its UTC capture day has used fewer than `daily_budget` (counting every batch decided before).

Deterministic: the same candidates and the same per-day usage give the same picks, whatever the
clock or the machine. Reruns do not pick again: the caller records each batch's decision once
(sfreward.flywheel.selection).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Mapping, Sequence

POLICIES = ("auto", "std", "disagreement")


@dataclass
class FlywheelConfig:
    """One config for the flywheel stage: the Dagster run config is generated from it
    (pipelines/defs/serving.py) and the sensor reads it from SFR_FLYWHEEL_* variables."""

    daily_budget: int = field(default=200, metadata={
        "help": "rollouts pushed for annotation per UTC capture day, over all batches"})
    k_per_batch: int = field(default=50, metadata={
        "help": "at most this many rollouts from one captured batch (top-k by score)"})
    policy: str = field(default="auto", metadata={
        "help": "std | disagreement | auto (disagreement when a candidate model other than production exists)"})
    project_key: str = field(default="sfreward-v1", metadata={
        "help": "Label Studio project the selected rollouts are pushed to"})

    def __post_init__(self) -> None:
        for name in ("daily_budget", "k_per_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"flywheel {name}: must be an integer >= 0, got {v!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"flywheel policy: must be one of {POLICIES}, got {self.policy!r}")
        if not isinstance(self.project_key, str) or len(self.project_key.strip()) < 3:
            raise ValueError(f"flywheel project_key: needs 3+ characters (a Label Studio title), "
                             f"got {self.project_key!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "FlywheelConfig":
        """From SFR_FLYWHEEL_DAILY_BUDGET, SFR_FLYWHEEL_K_PER_BATCH, SFR_FLYWHEEL_POLICY and
        SFR_FLYWHEEL_PROJECT_KEY; unset = the default. A bad value raises ValueError naming it."""
        env = os.environ if env is None else env
        kw: dict = {}
        for f in fields(cls):
            var = f"SFR_FLYWHEEL_{f.name.upper()}"
            raw = env.get(var, "").strip()
            if not raw:
                continue
            if f.type in (int, "int"):
                try:
                    kw[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{var}: must be an integer >= 0, got {raw!r}") from None
            else:
                kw[f.name] = raw
        try:
            return cls(**kw)
        except ValueError as e:
            raise ValueError(f"SFR_FLYWHEEL_*: {e}") from None


@dataclass(frozen=True)
class Candidate:
    sample_id: str
    day: str          # UTC capture day, YYYY-MM-DD: the day whose budget it counts against
    score: float      # 0..25, higher = more worth annotating; NaN = unscored (never taken)


@dataclass(frozen=True)
class Pick:
    rank: int         # 1 = the batch's first pick
    candidate: Candidate


def select(candidates: Sequence[Candidate], config: FlywheelConfig,
           used_per_day: Mapping[str, int]) -> list[Pick]:
    """The rollouts of one batch to annotate, in rank order (the rule in the module docstring).
    `used_per_day`: day -> rollouts already selected that day by earlier batches."""
    ranked = sorted((c for c in candidates if math.isfinite(c.score)), key=lambda c: (-c.score, c.sample_id))
    used = dict(used_per_day)
    picks: list[Pick] = []
    for c in ranked:
        if len(picks) >= config.k_per_batch:
            break
        if used.get(c.day, 0) >= config.daily_budget:
            continue  # this day is spent; a rollout of another day in the same batch may still fit
        used[c.day] = used.get(c.day, 0) + 1
        picks.append(Pick(len(picks) + 1, c))
    return picks
