"""GRPO for diffusers flow-matching denoisers with whole-image (Flow-GRPO) or region credit.

One step (`grpo_step`): for each prompt, sample G rollouts with T SDE steps (`sample`), score
them with a `GroupRewardFn` (SFReward through `sfr serve`, or in process), turn the rewards into
advantages (`make_credit`) and minimize `grpo_loss`:

    whole   Flow-GRPO exactly: scalar reward per rollout = the reward model's image score
            (its area-weighted aggregate of its own region rewards), group-normalized,
            clipped; one ratio per rollout and step from the log-prob averaged over all
            latent dims (`sfreward.credit.flow_grpo_loss`).
    region  `region_advantages` per region -> `token_coverage` of the regions on the token
            grid -> `region_weighted_loss` on the per-token log-probs (one ratio per region
            and step).
Both add Flow-GRPO's KL to the reference policy, beta * mean (mu - mu_ref)^2 / (2 g^2).
With one whole-image region, region mode equals whole mode (tests/sfreward/grpo).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from sfreward import credit
from sfreward.grpo.sde import flow_grpo_kl, sde_step_with_logprob

MODES = ("whole", "region")


@dataclass
class GRPOConfig:
    mode: str = "whole"
    group_size: int = 8             # G rollouts per prompt
    num_steps: int = 8              # T sampler steps
    noise_level: float = 0.7        # a
    shift: float = 1.0              # FlowMatchEulerDiscreteScheduler shift (SD3: 3.0)
    clip_eps: float = 1e-4          # Flow-GRPO's clip_range
    adv_clip: float = 5.0
    beta: float = 0.004             # KL weight (0 disables the reference forward)
    std: str = "group"              # advantage std: "group" | "global"
    region_weights: str = "area"    # pi_r in the region loss
    timestep_chunk: int | None = None   # backward every this many steps (memory); None = all at once
    max_grad_norm: float | None = None  # clip the gradient's global norm before each update; None = off

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.group_size < 2 or self.num_steps < 1:
            raise ValueError("group_size must be >= 2 and num_steps >= 1")


def flow_sigmas(num_steps: int, shift: float = 1.0) -> Tensor:
    """The sigmas [T + 1] of diffusers' FlowMatchEulerDiscreteScheduler (last one 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    s = FlowMatchEulerDiscreteScheduler(shift=shift)
    s.set_timesteps(num_steps)
    return s.sigmas.float().clone()


@dataclass
class Rollouts:
    """latents [B, T+1, C, H, W] (x_T .. x_0), log_probs [B, T, N], sigmas [T+1]; cond as given."""
    latents: Tensor
    log_probs: Tensor
    sigmas: Tensor
    cond: dict[str, Any]

    @property
    def final(self) -> Tensor:
        return self.latents[:, -1]


def _rep(cond: dict[str, Any], n: int) -> dict[str, Any]:
    """Repeat every batched tensor of a cond dict n times (batch b -> rows b*n .. b*n+n-1)."""
    return {k: v.repeat_interleave(n, 0) if isinstance(v, Tensor) else v for k, v in cond.items()}


def _device_of(denoiser: Any) -> torch.device:
    """The device of the denoiser's weights (adapters wrap a torch module as `.module`)."""
    module = getattr(denoiser, "module", denoiser)
    p = next(iter(module.parameters()), None) if isinstance(module, torch.nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev).to(device)


@torch.no_grad()
def sample(denoiser: Any, cond: dict[str, Any], shape: tuple[int, ...], sigmas: Tensor,
           noise_level: float, generator: torch.Generator | None = None) -> Rollouts:
    """SDE rollouts from pure noise; `shape` = (B, C, H, W), cond batched to B. The latents
    live on the denoiser's device; the noise comes from `generator` (CPU or not)."""
    x = _noise(shape, generator, _device_of(denoiser))
    lat, lps = [x], []
    for i in range(len(sigmas) - 1):
        s = sigmas[i].expand(shape[0])
        v = denoiser.velocity(x, s, cond)
        st = sde_step_with_logprob(v, sigmas[i], sigmas[i + 1], x, sigma_max=sigmas[1],
                                   noise_level=noise_level, generator=generator, patch=denoiser.patch)
        x = st.prev_sample
        lat.append(x)
        lps.append(st.log_prob)
    return Rollouts(torch.stack(lat, 1), torch.stack(lps, 1), sigmas, cond)


@torch.no_grad()
def sample_mean(denoiser: Any, cond: dict[str, Any], shape: tuple[int, ...], sigmas: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
    """Deterministic Euler (ODE) sampling from noise, for evaluation: x_0 [B, C, H, W]."""
    x = _noise(shape, generator, _device_of(denoiser))
    for i in range(len(sigmas) - 1):
        v = denoiser.velocity(x, sigmas[i].expand(shape[0]), cond)
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x


class Credit(NamedTuple):
    """image_adv [B]; region_adv, mask [B, K]; coverage [B, K, h, w] (token grid)."""
    image_adv: Tensor
    region_adv: Tensor
    mask: Tensor
    coverage: Tensor


def make_credit(region_rewards: Tensor, valid: Tensor, image_rewards: Tensor, coverage: Tensor,
                cfg: GRPOConfig) -> Credit:
    """Advantages for P groups of G rollouts.

    region_rewards, valid: [P, G, K]; image_rewards: [P, G] (the reward model's image score;
    NaN = invalid); coverage: [P, K, h, w] (regions shared by a group). Returns Credit with the
    group axis flattened (B = P * G)."""
    P, G, K = region_rewards.shape
    img = credit.region_advantages(image_rewards[..., None], torch.isfinite(image_rewards)[..., None],
                                   std=cfg.std, clip=cfg.adv_clip)
    reg = credit.region_advantages(region_rewards, valid, std=cfg.std, clip=cfg.adv_clip,
                                   image_rewards=image_rewards)
    cov = coverage[:, None].expand(P, G, *coverage.shape[1:]).flatten(0, 1)
    return Credit(img.advantages[..., 0].flatten(), reg.advantages.flatten(0, 1), reg.mask.flatten(0, 1), cov)


def grpo_loss(denoiser: Any, ro: Rollouts, cr: Credit, cfg: GRPOConfig, reference: Any = None,
              steps: slice | None = None) -> tuple[Tensor, dict[str, float]]:
    """The GRPO objective on the rollouts' timesteps `steps` (default all), averaged over them.

    reference: a denoiser for the KL term (None with beta > 0: `denoiser.module` must be a peft
    model, whose adapter is disabled for the reference forward)."""
    B, T1 = ro.latents.shape[:2]
    sl = steps or slice(0, T1 - 1)
    idx = torch.arange(T1 - 1)[sl]
    t = len(idx)
    x = ro.latents[:, idx].flatten(0, 1)
    x_next = ro.latents[:, idx + 1].flatten(0, 1)
    s, s_next = ro.sigmas[idx].repeat(B), ro.sigmas[idx + 1].repeat(B)
    cond = _rep(ro.cond, t)
    v = denoiser.velocity(x, s, cond)
    st = sde_step_with_logprob(v, s, s_next, x, sigma_max=ro.sigmas[1], noise_level=cfg.noise_level,
                               prev_sample=x_next, patch=denoiser.patch)
    lp_new = st.log_prob.view(B, t, -1)
    lp_old = ro.log_probs[:, idx]
    if cfg.mode == "whole":
        policy = credit.flow_grpo_loss(lp_new.mean(-1), lp_old.mean(-1), cr.image_adv, cfg.clip_eps, cfg.adv_clip)
    else:
        policy = credit.region_weighted_loss(lp_new, lp_old, cr.coverage, cr.region_adv, cfg.clip_eps,
                                             region_weights=cfg.region_weights, mask=cr.mask, adv_clip=cfg.adv_clip)
    loss, kl = policy, torch.zeros(())
    if cfg.beta > 0:
        with torch.no_grad():
            if reference is not None:
                v_ref = reference.velocity(x, s, cond)
            else:
                with denoiser.module.disable_adapter():
                    v_ref = denoiser.velocity(x, s, cond)
            mean_ref = sde_step_with_logprob(v_ref, s, s_next, x, sigma_max=ro.sigmas[1],
                                             noise_level=cfg.noise_level, prev_sample=x_next,
                                             patch=denoiser.patch).mean
        kl = flow_grpo_kl(st.mean, mean_ref, st.std_dev_t)
        loss = policy + cfg.beta * kl
    ratio = torch.exp(lp_new.mean(-1) - lp_old.mean(-1)).detach()
    return loss, {"policy_loss": float(policy.detach()), "kl": float(kl.detach()),
                  "clip_frac": float(((ratio - 1).abs() > cfg.clip_eps).float().mean())}


def backward(denoiser: Any, ro: Rollouts, cr: Credit, cfg: GRPOConfig, reference: Any = None) -> dict[str, float]:
    """grpo_loss(...).backward() over all timesteps, in chunks of `cfg.timestep_chunk` steps
    (gradients of the full-T mean; activations of one chunk at a time)."""
    T = ro.latents.shape[1] - 1
    chunk = cfg.timestep_chunk or T
    stats: dict[str, float] = {}
    for a in range(0, T, chunk):
        sl = slice(a, min(T, a + chunk))
        loss, st = grpo_loss(denoiser, ro, cr, cfg, reference, sl)
        w = (sl.stop - sl.start) / T
        (loss * w).backward()
        for k, v in st.items():
            stats[k] = stats.get(k, 0.0) + v * w
    return stats


# A group reward function: (source uint8 [H, W, 3], edits float [G, 3, H, W] in [0, 1],
# instruction) -> GroupReward.
class GroupReward(NamedTuple):
    """region_rewards [G, K] (NaN = invalid), masks bool [K, H, W] on the image, image_reward [G]."""
    region_rewards: Tensor
    masks: Tensor
    image_reward: Tensor
    info: dict


GroupRewardFn = Callable[[Any, Tensor, str], GroupReward]


def grpo_step(policy: Any, optimizer: torch.optim.Optimizer, sources: Tensor, instructions: list[str],
              reward_fn: GroupRewardFn, cfg: GRPOConfig, generator: torch.Generator,
              reference: Any = None, inner_steps: int = 1) -> dict[str, Any]:
    """One GRPO step of an editing policy over P prompts (sources [P, 3, H, W] in [0, 1]; the
    policy has `condition(sources, instructions)` and `to_image(x, sources)`).
    Rollouts are generated in one batch (P * G), scored per group, trained on `inner_steps`
    times (the first is on-policy; later ones use the clipped ratio)."""
    cfg.validate()
    P, G = sources.shape[0], cfg.group_size
    H, W = sources.shape[-2:]
    sig = flow_sigmas(cfg.num_steps, cfg.shift)
    cond = _rep(policy.condition(sources, instructions), G)
    ro = sample(policy, cond, (P * G, policy.latent_channels, H, W), sig, cfg.noise_level, generator)
    images = policy.to_image(ro.final, sources.repeat_interleave(G, 0))
    src_u8 = (sources.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype("uint8")
    rewards = [reward_fn(src_u8[p], images[p * G:(p + 1) * G], instructions[p]) for p in range(P)]
    K = max(r.region_rewards.shape[1] for r in rewards)
    R = torch.full((P, G, K), float("nan"))
    masks = torch.zeros(P, K, H, W, dtype=torch.bool)
    for p, r in enumerate(rewards):
        R[p, :, : r.region_rewards.shape[1]] = r.region_rewards
        masks[p, : r.masks.shape[0]] = r.masks
    img_r = torch.stack([r.image_reward for r in rewards])
    cov = credit.token_coverage(masks, token_px=policy.patch)
    cr = make_credit(R, torch.isfinite(R), img_r, cov, cfg)
    stats: dict[str, Any] = {}
    for _ in range(inner_steps):
        optimizer.zero_grad()
        stats = backward(policy, ro, cr, cfg, reference)
        if cfg.max_grad_norm is not None:
            params = [q for g in optimizer.param_groups for q in g["params"]]
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        optimizer.step()
    stats.update(reward=float(torch.nanmean(img_r)), images=images.detach(), rewards=rewards)
    return stats
