"""Data of the GRPO experiment: synthetic edit pairs (ground truth known) for pretraining the
editing policy and for RL prompts, held-out photos, and MultiEditBench's multi-region items.

An `EditPrompt` keeps the ground truth (ideal edit, region masks, which are targets) for
evaluation only: the policy sees the source and the instruction, the reward model sees the
source, the edit and the instruction (its regions come from its own proposer).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sfreward.synthetic import ops
from sfreward.synthetic.generator import SynthConfig, build_scenes, choose_edit

HELDOUT_PHOTOS = ("chelsea", "retina")


@dataclass
class EditPrompt:
    """source / ideal: float [H, W, 3] in [0, 1]; masks bool [K, H, W] (background last);
    targets bool [K]; kind: 'train' | 'heldout' | 'multiedit'."""
    name: str
    instruction: str
    source: np.ndarray
    ideal: np.ndarray
    masks: np.ndarray
    targets: np.ndarray
    kind: str


def _photo(scene_name: str) -> str:
    return scene_name.split("_", 1)[1].split("-v")[0]


def build_prompts(image_size: int, seed: int, n_train: int, n_heldout: int,
                  pretrain_ops_per_region: int = 2) -> tuple[list[EditPrompt], list[EditPrompt], list[EditPrompt]]:
    """(pretraining pairs, RL training prompts, held-out prompts). Held-out prompts come from
    photos never seen in pretraining or RL; RL prompts are a subset of pretraining sources with
    a fresh draw of instruction."""
    scenes = build_scenes(SynthConfig(n_sources=40, image_size=image_size, n_regions=3, seed=seed))
    pre, train, held = [], [], []
    for si, s in enumerate(scenes):
        heldout = _photo(s.name) in HELDOUT_PHOTOS
        n_obj = s.n_regions - 1
        for t in range(n_obj):
            for j in range(1 if heldout else pretrain_ops_per_region):
                rng = np.random.default_rng([seed, si, t, j])
                op = choose_edit(s, t, rng)
                targets = np.zeros(s.n_regions, bool)
                targets[t] = True
                p = EditPrompt(f"{s.name}-r{t}-{j}", op["text"], s.image, ops.apply_edit(s.image, s.masks[t], op, 1.0),
                               s.masks, targets, "heldout" if heldout else "train")
                (held if heldout else pre).append(p)
    rng = np.random.default_rng([seed, 99])
    train = [pre[i] for i in sorted(rng.choice(len(pre), size=min(n_train, len(pre)), replace=False))]
    held = [held[i] for i in sorted(rng.choice(len(held), size=min(n_heldout, len(held)), replace=False))]
    return pre, train, held


def multiedit_prompts(out_dir: Path, image_size: int, n_items: int, seed: int) -> list[EditPrompt]:
    """MultiEditBench items (two regions to edit in one instruction) as EditPrompts."""
    from sfreward.multiedit import MultiEditConfig, build, load_bench
    from warehouse import masks as maskcodec

    path = build(out_dir, MultiEditConfig(n_items=n_items, n_targets=2, image_size=image_size, seed=seed))
    root, items = load_bench(path.parent)
    from PIL import Image
    out = []
    for it in items:
        src = np.asarray(Image.open(root / it["source"]).convert("RGB"), np.float32) / 255
        ref = np.asarray(Image.open(root / it["reference"]).convert("RGB"), np.float32) / 255
        masks = np.stack([maskcodec.decode(r["mask"]) for r in it["regions"]]).astype(bool)
        targets = np.array([r["kind"] == "edit" for r in it["regions"]])
        out.append(EditPrompt(it["item_id"], it["instruction"], src, ref, masks, targets, "multiedit"))
    return out


def pairs_tensor(prompts: list[EditPrompt]) -> dict:
    """Pretraining pairs: {"source", "target": [M, 3, H, W], "instruction": [M]}."""
    def t(a):
        return torch.tensor(np.stack(a), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
    return {"source": t([p.source for p in prompts]), "target": t([p.ideal for p in prompts]),
            "instruction": [p.instruction for p in prompts]}


def oracle(p: EditPrompt, out: np.ndarray) -> dict:
    """Ground-truth scores of one output float [H, W, 3] (MultiEditBench's region scorer):
    success (mean over target regions, 0..25), preserve (mean over the other regions, 0..25),
    reward = area-weighted mean over regions of sqrt(phi / 25) with phi = success (targets) or
    preserve (others): the region reward's formula with perfect naturalness."""
    from sfreward.multiedit import region_scores

    succ, pres, phis, areas = [], [], [], []
    for m, is_t in zip(p.masks, p.targets):
        if not m.any():
            continue
        s = region_scores(p.source, out, p.ideal, m, bool(is_t))
        phi = s["success"] if is_t else s["preserve"]
        (succ if is_t else pres).append(phi)
        phis.append(phi)
        areas.append(float(m.sum()))
    a = np.asarray(areas)
    reward = float((np.sqrt(np.asarray(phis) / 25.0) * a).sum() / a.sum())
    return {"success": float(np.mean(succ)), "preserve": float(np.mean(pres)) if pres else float("nan"),
            "oracle_reward": reward}
