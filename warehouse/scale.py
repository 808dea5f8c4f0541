"""The one label scale of the platform (docs/architecture.md, "Scales").

Annotators rate in stars 1..STARS_MAX; the reward model, the datasets and the region reward use
0..REWARD_MAX. The lowest star is the bottom of the reward scale and the highest its top:

    reward = (stars - 1) * REWARD_MAX / (STARS_MAX - 1)      1 star = 0, 3 = 12.5, 5 stars = 25

so "1 star" and "a missed edit" (reward 0 in the ground truth and in the region reward formula)
mean the same thing. Spreads (standard deviations) scale by REWARD_PER_STAR without the shift.

LABEL_SCALE names this mapping. Datasets record it in their curation config (so a dataset built
with it is a new version) and models in their card; models trained before it existed used
LEGACY_LABEL_SCALE (reward = 5 * stars, 1 star = 5).
"""
from __future__ import annotations

STARS_MIN = 1
STARS_MAX = 5
REWARD_MAX = 25.0
REWARD_PER_STAR = REWARD_MAX / (STARS_MAX - STARS_MIN)   # 6.25
LABEL_SCALE = "stars1to5-reward0to25-v2"                 # 1 star = 0, 5 stars = 25
LEGACY_LABEL_SCALE = "stars1to5-reward5to25-v1"          # 1 star = 5 (reward = 5 * stars)


def stars_to_reward(stars: float | None) -> float | None:
    """Stars (1..STARS_MAX, fractional medians allowed) -> reward scale 0..REWARD_MAX.
    None stays None (an unrated item is never 0)."""
    if stars is None:
        return None
    return (float(stars) - STARS_MIN) * REWARD_PER_STAR


def reward_to_stars(reward: float | None) -> float | None:
    """Inverse of stars_to_reward (not rounded: callers pick their rounding)."""
    if reward is None:
        return None
    return float(reward) / REWARD_PER_STAR + STARS_MIN


def stars_to_reward_sql(expr: str) -> str:
    """SQL expression mapping a star statistic to the reward scale (NULL stays NULL)."""
    return f"(({expr}) - {STARS_MIN}) * {REWARD_PER_STAR!r}"


def star_spread_to_reward_sql(expr: str) -> str:
    """SQL expression mapping a spread in stars (std) to reward units."""
    return f"({expr}) * {REWARD_PER_STAR!r}"
