"""Does region credit beat whole-image credit? A small GRPO experiment on CPU.

The policy edits small synthetic photos (`sfreward.synthetic`) to follow a recolour instruction
("Recolor the orange region in the upper left to blue.") and must leave every other region
untouched. It is a tiny conv net over the latent-token grid: for token n it outputs a mean RGB
offset mu[n] that is added to the token's `token_px x token_px` pixel block; a rollout samples
a[n] = mu[n] + sigma * eps (one Gaussian SDE-like step, T = 1), so the per-token log-density
l[i, n] (averaged over the 3 channels) is exactly the quantity `sfreward.credit` works on.

Rewards come from the ground truth (the ideal edit is known), per region, on 0..25 as in
`sfreward.multiedit`: the target region's success 25 * clip(1 - |out - ideal| / |src - ideal|),
every other region's preserve 25 * clip(1 - |out - src| / 0.1); region reward
R_r = sqrt(phi_r * AES) / 25 with AES = 25 (the editor makes no artifacts by construction).

Three arms, same prompts, same initial weights, same sampler seeds, same budget:
    whole        R_img = sum_r pi_r R_r per rollout, group-normalized, Flow-GRPO's loss with one
                 ratio per rollout (`flow_grpo_loss` on log-probs averaged over tokens)
    region       `region_advantages` over [B, G, K] + `region_weighted_loss` with token coverage
                 and the same pi_r as the reward (uniform by default: small regions weigh more
                 per token than in `whole`)
    region_area  the same advantages, loss weights pi_r proportional to region area: every token
                 then weighs 1/N exactly as in `whole`, so the only difference from `whole` is
                 which advantage a token gets (the credit-assignment effect alone)
Evaluation uses the mean action (no sampling noise) on the training prompts and on held-out
prompts. `run_credit_experiment` writes credit_experiment.{md,png,json} into its output folder.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import color

from sfreward import credit
from sfreward.synthetic import ops
from sfreward.synthetic.generator import SynthConfig, build_scenes, choose_edit
from sfreward.synthetic.scene import PALETTE

ARMS = ("whole", "region", "region_area")
PRESERVE_TAU = 0.1  # as sfreward.multiedit


@dataclass
class ExperimentConfig:
    # Fields with help text are `sfr experiment credit` flags (pipelines/configs.py).
    n_prompts: int = field(default=8, metadata={
        "help": "training prompts ((source, instruction) pairs; every step uses all of them)"})
    n_heldout: int = 4            # prompts never trained on, for evaluation only
    image_size: int = 64          # pixels (square)
    token_px: int = 4             # pixels per latent token side (16 in FLUX; 16 x 16 tokens here)
    group_size: int = field(default=8, metadata={"help": "rollouts per prompt (G)"})
    steps: int = field(default=300, metadata={"help": "GRPO steps (sampling rounds) per run"})
    inner_steps: int = 2          # gradient steps per round (ratios move off 1, clipping matters)
    lr: float = 1e-2
    sigma: float = 0.05           # exploration std of the per-token action (image units)
    clip_eps: float = 0.2
    region_weights: str = "uniform"   # pi_r for both arms: "uniform" or "area"
    std: str = "group"            # region arms' advantage std ("group" | "global"); whole uses group std
    threshold: float = field(default=0.85, metadata={"help": "eval mean region reward counted as solved"})
    eval_every: int = 10
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data_seed: int = 0

    def validate(self) -> None:
        if self.image_size % self.token_px:
            raise ValueError(f"image_size {self.image_size} must be a multiple of token_px {self.token_px}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 for group-relative advantages, got {self.group_size}")
        if self.region_weights not in ("uniform", "area"):
            raise ValueError(f"region_weights must be 'uniform' or 'area', got {self.region_weights!r}")
        if self.steps < 1 or not self.seeds:
            raise ValueError("steps must be >= 1 and seeds non-empty")


@dataclass
class Prompts:
    """A batch of P prompts padded to K regions. src/ideal [P, 3, H, W]; masks [P, K, H, W] bool
    (target first, background last, empty padding between); feats [P, 7, h, w]; coverage [P, K, h, w]."""
    src: torch.Tensor
    ideal: torch.Tensor
    masks: torch.Tensor
    is_edit: torch.Tensor
    valid: torch.Tensor
    feats: torch.Tensor
    coverage: torch.Tensor
    gap: torch.Tensor


def make_prompts(cfg: ExperimentConfig, n: int, offset: int, target: int = 0) -> Prompts:
    """n recolour prompts from scenes offset.. of the synthetic generator, recolouring object
    region `target` (clipped to the scene's regions). The generator reuses its photos when asked
    for more scenes than it has, so held-out prompts use another target region."""
    scenes = build_scenes(SynthConfig(n_sources=offset + n, image_size=cfg.image_size, n_regions=3,
                                      seed=cfg.data_seed))[offset:offset + n]
    if len(scenes) < n:
        raise ValueError(f"the synthetic generator gave only {len(scenes) + offset} scenes; ask for fewer prompts")
    K = max(s.n_regions for s in scenes)
    src, ideal, masks, feats = [], [], [], []
    for i, s in enumerate(scenes):
        rng = np.random.default_rng([cfg.data_seed, offset + i, 11])
        t = min(target, s.n_regions - 2)
        op = choose_edit(s, t, rng, ops_allowed=["recolor"])
        src.append(s.image)
        ideal.append(ops.apply_edit(s.image, s.masks[t], op, 1.0))
        objects = [s.masks[t]] + [s.masks[k] for k in range(s.n_regions - 1) if k != t]  # target first
        m = np.zeros((K, cfg.image_size, cfg.image_size), bool)
        m[: s.n_regions - 1] = objects
        m[-1] = s.masks[-1]
        masks.append(m)
        rgb = color.hsv2rgb(np.array([[[PALETTE[op["color"]] / 360, 0.8, 0.8]]]))[0, 0]
        feats.append(rgb)
    src_t = torch.tensor(np.stack(src)).permute(0, 3, 1, 2).float()
    ideal_t = torch.tensor(np.stack(ideal)).permute(0, 3, 1, 2).float()
    masks_t = torch.tensor(np.stack(masks))
    cov = credit.token_coverage(masks_t, token_px=cfg.token_px)                 # [P, K, h, w]
    tok_src = F.avg_pool2d(src_t, cfg.token_px)                                  # [P, 3, h, w]
    tgt = torch.tensor(np.stack(feats)).float()[:, :, None, None].expand_as(tok_src)
    feats_t = torch.cat([tok_src, cov[:, :1], tgt], 1)                           # [P, 7, h, w]
    area = masks_t.flatten(2).sum(-1).float()
    gap = ((src_t - ideal_t).abs().mean(1, keepdim=True) * masks_t).flatten(2).sum(-1) / area.clamp_min(1)
    is_edit = torch.zeros(masks_t.shape[:2], dtype=torch.bool)
    is_edit[:, 0] = True
    return Prompts(src_t, ideal_t, masks_t, is_edit, area > 0, feats_t, cov, gap)


class TokenEditor(torch.nn.Module):
    """Tiny conv net on the token grid: features [P, 7, h, w] -> mean RGB offset [P, 3, h, w]."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(7, hidden, 3, padding=1), torch.nn.GELU(),
            torch.nn.Conv2d(hidden, hidden, 1), torch.nn.GELU(),
            torch.nn.Conv2d(hidden, 3, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)


def render(p: Prompts, actions: torch.Tensor, token_px: int) -> torch.Tensor:
    """Edited images [P, G, 3, H, W]: each prompt's source plus per-token offsets [P, G, 3, h, w]."""
    P, G = actions.shape[:2]
    up = F.interpolate(actions.flatten(0, 1), scale_factor=token_px, mode="nearest")
    return (p.src[:, None] + up.view(P, G, *up.shape[1:])).clamp(0, 1)


def region_quality(p: Prompts, out: torch.Tensor) -> torch.Tensor:
    """phi [P, G, K] on 0..25 for images [P, G, 3, H, W]: success for the target region,
    preserve elsewhere (0 on padding). Region means are one batched matmul with the masks."""
    m = p.masks.flatten(2).float()                                              # [P, K, HW]
    area = m.sum(-1).clamp_min(1)[:, None, :]                                   # [P, 1, K]
    left = (out - p.ideal[:, None]).abs().mean(2).flatten(2) @ m.transpose(1, 2) / area
    moved = (out - p.src[:, None]).abs().mean(2).flatten(2) @ m.transpose(1, 2) / area
    success = 25 * (1 - left / p.gap[:, None].clamp_min(1e-6)).clamp(0, 1)
    preserve = 25 * (1 - moved / PRESERVE_TAU).clamp(0, 1)
    return torch.where(p.is_edit[:, None], success, preserve) * p.valid[:, None]


def region_rewards(phi: torch.Tensor) -> torch.Tensor:
    """R_r = sqrt(phi_r * AES) / 25 with AES = 25: [R, K] in [0, 1]."""
    return (phi * 25.0).clamp_min(0).sqrt() / 25.0


def _weights(p: Prompts, mode: str) -> torch.Tensor:
    """Region weights pi [P, K] (rows sum to 1; 0 on padding)."""
    w = p.coverage.sum((-2, -1)) if mode == "area" else torch.ones(p.valid.shape)
    w = w * p.valid
    return w / w.sum(-1, keepdim=True)


@torch.no_grad()
def evaluate(model: TokenEditor, p: Prompts, cfg: ExperimentConfig) -> dict:
    phi = region_quality(p, render(p, model(p.feats)[:, None], cfg.token_px))[:, 0]
    R = region_rewards(phi)
    w = _weights(p, cfg.region_weights)
    ctx = (~p.is_edit) & p.valid
    ctx[:, -1] = False
    return {"reward": float((w * R).sum(-1).mean()),
            "edit_success": float(phi[:, 0].mean()),
            "context_preserve": float(phi[ctx].mean()) if ctx.any() else float("nan"),
            "background_preserve": float(phi[:, -1].mean())}


def train_arm(arm: str, seed: int, cfg: ExperimentConfig, train: Prompts, heldout: Prompts) -> dict:
    """One GRPO run; returns curves and final evaluation."""
    torch.manual_seed(seed)
    model = TokenEditor()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(10_000 + seed)
    P, G = train.src.shape[0], cfg.group_size
    K = train.masks.shape[1]
    cov = train.coverage[:, None].expand(P, G, *train.coverage.shape[1:]).flatten(0, 1)  # [P*G, K, h, w]
    w = _weights(train, cfg.region_weights)                                     # [P, K]
    w_loss = _weights(train, "area") if arm == "region_area" else w             # [P, K]
    w_roll = w_loss[:, None].expand(P, G, K).flatten(0, 1)                      # [P*G, K]
    valid = train.valid[:, None].expand(P, G, K)
    curve_steps, eval_curve, sample_curve = [], [], []
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            curve_steps.append(step)
            eval_curve.append(evaluate(model, train, cfg)["reward"])
        if step == cfg.steps:
            break
        with torch.no_grad():
            mu = model(train.feats)[:, None].expand(P, G, 3, *train.feats.shape[2:])
            a = mu + cfg.sigma * torch.randn(mu.shape, generator=gen)          # [P, G, 3, h, w]
            logp_old = _logp(a, mu, cfg.sigma)                                  # [P*G, N]
            R = region_rewards(region_quality(train, render(train, a, cfg.token_px)))  # [P, G, K]
        sample_curve.append(float((w[:, None] * R).sum(-1).mean()))
        if arm == "whole":
            r_img = (w[:, None] * R).sum(-1)                                    # [P, G]
            adv = (r_img - r_img.mean(1, keepdim=True)) / (r_img.std(1, unbiased=False, keepdim=True) + 1e-4)
            adv = adv.clamp(-5, 5).flatten()
        else:
            ra = credit.region_advantages(R, valid, std=cfg.std)
            adv_r, adv_mask = ra.advantages.flatten(0, 1), ra.mask.flatten(0, 1)
        for _ in range(cfg.inner_steps):
            mu_new = model(train.feats)[:, None].expand(P, G, 3, *train.feats.shape[2:])
            logp_new = _logp(a, mu_new, cfg.sigma)
            if arm == "whole":
                loss = credit.flow_grpo_loss(logp_new.mean(-1), logp_old.mean(-1), adv, cfg.clip_eps)
            else:
                loss = credit.region_weighted_loss(logp_new, logp_old, cov, adv_r, cfg.clip_eps,
                                                   region_weights=w_roll, mask=adv_mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
    final_train = evaluate(model, train, cfg)
    final_held = evaluate(model, heldout, cfg)
    reached = next((s for s, r in zip(curve_steps, eval_curve) if r >= cfg.threshold), None)
    return {"arm": arm, "seed": seed, "steps": curve_steps, "eval_reward": eval_curve,
            "sample_reward": sample_curve, "steps_to_threshold": reached,
            "final": final_train, "heldout": final_held}


def _logp(a: torch.Tensor, mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-token Gaussian log-density averaged over channels: [P, G, 3, h, w] -> [P*G, N]."""
    lp = -0.5 * ((a - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    return lp.mean(2).flatten(0, 1).flatten(1)


def run_credit_experiment(cfg: ExperimentConfig | None = None, out_dir: str | Path = ".",
                          progress: bool = False, command: str = "sfr experiment credit") -> dict:
    """Train both arms for every seed; write credit_experiment.{json,md,png} into out_dir and
    return the results dict (config, runs, summary)."""
    cfg = cfg or ExperimentConfig()
    cfg.validate()
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give on a shared box
    t0 = time.time()
    load0 = os.getloadavg()[0]
    train = make_prompts(cfg, cfg.n_prompts, 0)
    heldout = make_prompts(cfg, cfg.n_heldout, cfg.n_prompts, target=1)
    jobs = [(arm, s) for s in cfg.seeds for arm in ARMS]
    if progress:
        from tqdm import tqdm
        jobs = tqdm(jobs, desc="credit experiment runs", unit="run")
    runs = [train_arm(arm, s, cfg, train, heldout) for arm, s in jobs]
    results = {"config": asdict(cfg), "runs": runs, "summary": summarize(runs, cfg),
               "wall_s": round(time.time() - t0, 1),
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
                          f"load average {load0:.1f} at start and {os.getloadavg()[0]:.1f} at end",
               "command": command}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "credit_experiment.json").write_text(json.dumps(results, indent=1))
    from sfreward.experiments.report import plot, to_markdown
    plot(results, out / "credit_experiment.png")
    (out / "credit_experiment.md").write_text(to_markdown(results))
    results["paths"] = {k: str(out / f"credit_experiment.{k}") for k in ("md", "png", "json")}
    return results


def summarize(runs: list[dict], cfg: ExperimentConfig) -> dict:
    """Per arm: mean and std over seeds of the final metrics and steps to threshold."""
    out = {}
    for arm in ARMS:
        rs = [r for r in runs if r["arm"] == arm]
        reached = [r["steps_to_threshold"] for r in rs if r["steps_to_threshold"] is not None]

        def ms(vals):
            v = np.asarray(vals, float)
            return [round(float(np.nanmean(v)), 4), round(float(np.nanstd(v)), 4)]

        out[arm] = {
            "n_seeds": len(rs), "n_reached": len(reached),
            "steps_to_threshold": ms(reached) if reached else None,
            "final_reward": ms([r["final"]["reward"] for r in rs]),
            "edit_success": ms([r["final"]["edit_success"] for r in rs]),
            "context_preserve": ms([r["final"]["context_preserve"] for r in rs]),
            "background_preserve": ms([r["final"]["background_preserve"] for r in rs]),
            "heldout_reward": ms([r["heldout"]["reward"] for r in rs]),
            "auc_eval_reward": ms([float(np.mean(r["eval_reward"])) for r in rs]),
        }
    return out
