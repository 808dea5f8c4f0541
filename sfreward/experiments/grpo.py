"""Does a learned REGION reward improve a flow-matching image editor more than a whole-image
reward? GRPO of a small diffusers editor (`sfreward.grpo.policy`) on CPU with rewards from the
workspace's registered SFReward served by `sfr serve` over HTTP.

Two arms, same pretrained policy, prompts, seeds and budget:
    whole   Flow-GRPO: the reward model's image score (area-weighted aggregate of its own region
            rewards), group-normalized, one ratio per rollout and step
    region  the same model's region rewards -> region advantages -> token coverage of the
            server's proposed regions -> region-weighted loss on per-token log-probs
Ground truth (the ideal edit, the target regions) is used for evaluation only: success inside
the target regions, preservation outside, and an oracle reward next to the learned one, on the
training prompts, held-out photos and MultiEditBench's two-region instructions.
`run_grpo_experiment` writes grpo_experiment.{json,md,png} (+ grpo_examples.png).
"""
from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from sfreward.experiments.grpo_data import (EditPrompt, build_prompts, multiedit_prompts, oracle,
                                            pairs_tensor)
from sfreward.grpo.policy import PolicyConfig, cached_policy
from sfreward.grpo.trainer import GRPOConfig, flow_sigmas, grpo_step, sample_mean

ARMS = ("whole", "region")


@dataclass
class GRPOExperimentConfig:
    image_size: int = 32
    patch: int = 4                    # 8 x 8 credit tokens
    channels: tuple[int, ...] = (16, 32)
    # 200 barely edited (success ~0.5 of 25); 600 still leaves the editor under-trained
    pretrain_steps: int = field(default=600, metadata={"help": "flow-matching steps of the editor before RL"})
    n_train: int = field(default=4, metadata={"help": "RL prompts, all used every step"})
    n_heldout: int = 4
    n_multiedit: int = 4
    # G = 6 left the advantages mostly rollout noise
    group_size: int = field(default=12, metadata={"help": "G rollouts per prompt"})
    # T = 4 left twice the residual noise in the rollouts
    num_steps: int = field(default=8, metadata={"help": "T SDE steps per rollout"})
    rl_steps: int = field(default=12, metadata={"help": "GRPO steps per run"})
    inner_steps: int = field(default=2, metadata={"help": "optimizer updates per batch of rollouts"})
    # 3e-4 destroyed the policy, 3e-5 barely moved it (docs/grpo.md)
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of the policy"})
    clip_eps: float = 0.2
    beta: float = field(default=0.004, metadata={"help": "KL-to-reference weight"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the gradient norm before each update"})
    # a = 0.7 with 4 steps leaves 0.1 per-pixel noise in the rollouts
    noise_level: float = field(default=0.3, metadata={"help": "SDE noise level a"})
    eval_every: int = 4
    eval_samples: int = 2             # outputs per eval prompt (fixed noise)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data_seed: int = 0
    threads: int = field(default=2, metadata={"help": "torch threads (1 on a loaded machine, where 2 threads wait on each other)"})

    @classmethod
    def quick(cls) -> "GRPOExperimentConfig":
        """For tests: seconds, not minutes (numbers mean nothing)."""
        return cls(pretrain_steps=5, n_train=2, n_heldout=1, n_multiedit=1, group_size=3, num_steps=2,
                   rl_steps=1, inner_steps=1, eval_every=1, eval_samples=1, seeds=[0], threads=1)

    def validate(self) -> None:
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.rl_steps < 1 or self.eval_every < 1:
            raise ValueError("rl_steps and eval_every must be >= 1")
        for name in ("n_train", "inner_steps", "num_steps", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (advantages compare rollouts of a group), got {self.group_size}")
        if self.noise_level <= 0:
            raise ValueError(f"noise_level must be > 0 (the SDE's log-probabilities need noise), got {self.noise_level}")

    def grpo(self, mode: str) -> GRPOConfig:
        return GRPOConfig(mode=mode, group_size=self.group_size, num_steps=self.num_steps,
                          noise_level=self.noise_level, clip_eps=self.clip_eps, beta=self.beta,
                          max_grad_norm=self.max_grad_norm)

    def policy(self) -> PolicyConfig:
        return PolicyConfig(image_size=self.image_size, patch=self.patch, channels=tuple(self.channels),
                            pretrain_steps=self.pretrain_steps, seed=self.data_seed)


def _src(prompts: list[EditPrompt]) -> torch.Tensor:
    return torch.tensor(np.stack([p.source for p in prompts]), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def edit(policy, prompts: list[EditPrompt], cfg: GRPOExperimentConfig, seed: int = 1234) -> torch.Tensor:
    """Deterministic (ODE) edits from fixed noise: [len(prompts) * eval_samples, 3, H, W] in [0, 1]."""
    n = cfg.eval_samples
    cond = policy.condition(_src(prompts), [p.instruction for p in prompts])
    cond = {k: v.repeat_interleave(n, 0) if isinstance(v, torch.Tensor) else v for k, v in cond.items()}
    H = cfg.image_size
    x = sample_mean(policy, cond, (len(prompts) * n, 3, H, H), flow_sigmas(cfg.num_steps),
                    torch.Generator().manual_seed(seed))
    return policy.to_image(x, _src(prompts).repeat_interleave(n, 0))


def evaluate(policy, sets: dict[str, list[EditPrompt]], reward_fn, cfg: GRPOExperimentConfig) -> dict:
    """Per set: GT success / preserve / oracle reward and the learned reward (server image score)."""
    out = {}
    n = cfg.eval_samples
    for name, prompts in sets.items():
        imgs = edit(policy, prompts, cfg)
        rows = []
        for i, p in enumerate(prompts):
            group = imgs[i * n:(i + 1) * n]
            src_u8 = (p.source * 255 + 0.5).astype(np.uint8)
            learned = reward_fn(src_u8, group, p.instruction).image_reward
            for j in range(n):
                o = oracle(p, group[j].permute(1, 2, 0).numpy())
                rows.append({**o, "learned_reward": float(learned[j])})
        out[name] = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
        out[name]["divergence"] = out[name]["learned_reward"] - out[name]["oracle_reward"]
    return out


def run_arm(arm: str, seed: int, base_policy, data: dict, reward_fn, cfg: GRPOExperimentConfig) -> dict:
    torch.manual_seed(seed)
    policy = copy.deepcopy(base_policy).train()
    reference = copy.deepcopy(base_policy).eval().requires_grad_(False)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(10_000 + seed)
    train = data["sets"]["train"]
    sources, instr = _src(train), [p.instruction for p in train]
    gcfg = cfg.grpo(arm)
    steps, evals, sample_reward, step_s = [], [], [], []
    for step in range(cfg.rl_steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.rl_steps:
            steps.append(step)
            evals.append(evaluate(policy.eval(), data["sets"], reward_fn, cfg))
            policy.train()
        if step == cfg.rl_steps:
            break
        t0 = time.perf_counter()
        st = grpo_step(policy, opt, sources, instr, reward_fn, gcfg, gen, reference, cfg.inner_steps)
        step_s.append(time.perf_counter() - t0)
        sample_reward.append(st["reward"])
    after = {k: edit(policy.eval(), v[:3], cfg).numpy() for k, v in data["sets"].items()}
    return {"arm": arm, "seed": seed, "steps": steps, "evals": evals, "sample_reward": sample_reward,
            "step_s": float(np.mean(step_s)), "examples": after}


def run_grpo_experiment(cfg: GRPOExperimentConfig | None = None, out_dir: str | Path = ".",
                        home: str | os.PathLike | None = None, model: str = "production",
                        cache_dir: str | Path | None = None, progress: bool = False,
                        command: str = "sfr experiment grpo") -> dict:
    """Pretrain (or load) the policy, start `sfr serve` on the registered model, run every arm
    and seed, evaluate, write the report. Returns the results dict (with "paths")."""
    from sfreward.client import RewardClient
    from sfreward.experiments.grpo_server import ServeProcess, check_model
    from sfreward.grpo.rewards import server_reward

    cfg = cfg or GRPOExperimentConfig()
    cfg.validate()
    model_id = check_model(home, model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    t0, load0 = time.time(), os.getloadavg()[0]
    pre, train, held = build_prompts(cfg.image_size, cfg.data_seed, cfg.n_train, cfg.n_heldout)
    sets = {"train": train, "heldout": held,
            "multiedit": multiedit_prompts(out / "multiedit", cfg.image_size, cfg.n_multiedit, cfg.data_seed)}
    t_pre = time.time()
    policy, key, cached = cached_policy(cfg.policy(), pairs_tensor(pre), cache_dir or out / "cache")
    pretrain_s = time.time() - t_pre
    runs = []
    with ServeProcess(home, model, out / "serve.log") as srv, RewardClient(srv.url, token=srv.token) as client:
        version = client.version()
        reward_fn = server_reward(client)
        base_eval = evaluate(policy, sets, reward_fn, cfg)
        before = {k: edit(policy, v[:3], cfg).numpy() for k, v in sets.items()}
        jobs = [(arm, s) for s in cfg.seeds for arm in ARMS]
        if progress:
            from tqdm import tqdm
            jobs = tqdm(jobs, desc="grpo experiment runs", unit="run")
        for arm, s in jobs:
            runs.append(run_arm(arm, s, policy, {"sets": sets}, reward_fn, cfg))
    results = {
        "config": asdict(cfg), "model": {"ref": model, "model_id": model_id, "served_version": version},
        "policy": {"content_hash": key, "cached": cached, "pretrain_s": round(pretrain_s, 1),
                   "n_pretrain_pairs": len(pre), "n_params": sum(p.numel() for p in policy.parameters())},
        "sets": {k: [{"name": p.name, "instruction": p.instruction} for p in v] for k, v in sets.items()},
        "before": base_eval, "runs": [{k: v for k, v in r.items() if k != "examples"} for r in runs],
        "wall_s": round(time.time() - t0, 1), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {cfg.threads} torch thread(s), load average "
                   f"{load0:.1f} at start and {os.getloadavg()[0]:.1f} at end",
        "command": command,
    }
    from sfreward.experiments.grpo_report import summarize, to_markdown, plot, plot_examples
    results["summary"] = summarize(results)
    (out / "grpo_experiment.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "grpo_experiment.png")
    plot_examples(sets, before, runs, out / "grpo_examples.png")
    (out / "grpo_experiment.md").write_text(to_markdown(results))
    results["paths"] = {"md": str(out / "grpo_experiment.md"), "png": str(out / "grpo_experiment.png"),
                        "examples_png": str(out / "grpo_examples.png"), "json": str(out / "grpo_experiment.json")}
    return results
