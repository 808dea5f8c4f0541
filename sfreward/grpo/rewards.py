"""Group reward functions for `sfreward.grpo.trainer`: SFReward through `sfr serve` (HTTP, the
`RewardClient`) or in process (a `Scorer`). Both return region rewards on regions proposed once
per group on the source (the server's proposer), their masks, and the image score the whole-
image arm trains on: the reward model's area-weighted aggregate of its own region rewards
(`make_flow_grpo_reward_fn(reduce="area")`), so the two arms differ only in credit assignment.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from sfreward.grpo.trainer import GroupReward, GroupRewardFn


def _to_u8(edits: Tensor) -> list[np.ndarray]:
    return list((edits.detach().float().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8))


def _group(region_rows: list[list[float] | None], masks: np.ndarray, areas: np.ndarray, info: dict) -> GroupReward:
    K = masks.shape[0]
    R = torch.full((len(region_rows), K), float("nan"))
    for i, row in enumerate(region_rows):
        if row is not None:
            R[i] = torch.tensor(row, dtype=torch.float32)
    a = torch.tensor(areas, dtype=torch.float32)
    img = (R * a).sum(-1) / a.sum()          # NaN rows stay NaN: invalid, never 0
    return GroupReward(R, torch.from_numpy(masks), img, info)


def server_reward(client: Any) -> GroupRewardFn:
    """Score each group with one POST /v1/score_group through `make_flow_grpo_reward_fn`."""
    from sfreward.client import make_flow_grpo_reward_fn
    from warehouse import masks as maskcodec

    fn = make_flow_grpo_reward_fn(client, reduce="area", on_invalid="nan")

    def call(source: np.ndarray, edits: Tensor, instruction: str) -> GroupReward:
        G = edits.shape[0]
        _, info = fn(_to_u8(edits), [instruction] * G, [{"source": source}] * G)
        regions = info["regions"][0]
        masks = np.stack([maskcodec.decode(r["mask"]) for r in regions]).astype(bool)
        areas = np.array([r["area"] for r in regions], dtype=np.float64)
        return _group(info["region_rewards"], masks, areas,
                      {"model_version": info["model_version"], "region_source": "server"})

    return call


def inprocess_reward(scorer: Any, proposer_config: Any = None) -> GroupRewardFn:
    """The same in process: regions from `sfreward.inference.propose_regions` (the server's
    proposer), scores from `scorer.score`."""
    from sfreward.inference import propose_regions

    def call(source: np.ndarray, edits: Tensor, instruction: str) -> GroupReward:
        eds = _to_u8(edits)
        regions = propose_regions(source, eds, proposer_config)
        if regions is None:
            raise RuntimeError("no region proposer is installed (sfreward.regions)")
        res = scorer.score([source] * len(eds), eds, instruction, [regions] * len(eds))
        masks = np.stack([np.asarray(r.mask if hasattr(r, "mask") else r["mask"], bool) for r in regions])
        areas = masks.reshape(len(masks), -1).sum(-1).astype(np.float64)
        rows = [it.rewards if it.valid else None for it in res]
        return _group(rows, masks, areas, {"model_version": scorer.version, "region_source": "in_process"})

    return call
