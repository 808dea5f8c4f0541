"""Flow-GRPO's SDE sampling step of a rectified-flow sampler, with PER-TOKEN log-probabilities.

Flow-GRPO (`sd3_sde_with_logprob`) turns the deterministic Euler step of a flow-matching model
into an SDE step with the same marginals and noise level `a`:

    sigma = sigmas[i], sigma' = sigmas[i + 1], dt = sigma' - sigma (< 0)
    g     = a * sqrt(sigma / (1 - s)),  s = sigma except sigma == 1 -> sigmas[1]  ("std_dev_t")
    mu    = x * (1 + g^2 / (2 sigma) * dt) + v * (1 + g^2 (1 - sigma) / (2 sigma)) * dt
    x'    = mu + g * sqrt(-dt) * eps
    log p = Gaussian log-density of x' (detached) under N(mu, (g sqrt(-dt))^2), per element.

Flow-GRPO then averages log p over every non-batch dimension: one number per image, which is
what keeps region credit out. Here the average is over channels and over the latent pixels of
each transformer patch only: patch p on a latent [B, C, H, W] gives N = (H / p)(W / p) tokens in
row-major order (token n = (y // p) * (W / p) + x // p), the grid `sfreward.credit.token_coverage`
uses. With one token (p covering the whole latent) this is Flow-GRPO's number. fp32 throughout
(bf16 overflows in mu).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SDEStep(NamedTuple):
    """prev_sample / mean: [B, C, H, W] fp32; log_prob: [B, N] fp32 (per token);
    std_dev_t: [B, 1, 1, 1] (g, Flow-GRPO's std_dev_t; the step std is g * sqrt(-dt))."""
    prev_sample: Tensor
    log_prob: Tensor
    mean: Tensor
    std_dev_t: Tensor


def token_mean(x: Tensor, patch: int | tuple[int, int] | None) -> Tensor:
    """Mean of `x [B, C, H, W]` over channels and over each patch's pixels -> [B, N], row-major.

    patch: p (square), (ph, pw), or None for one whole-image token (N = 1)."""
    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    ph, pw = (H, W) if patch is None else ((patch, patch) if isinstance(patch, int) else patch)
    if ph < 1 or pw < 1 or H % ph or W % pw:
        raise ValueError(f"patch {ph}x{pw} does not tile the {H}x{W} latent")
    return F.avg_pool2d(x.mean(1, keepdim=True), (ph, pw)).flatten(1)


def _as_batch(s: Tensor | float, b: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(s, dtype=torch.float32, device=device)
    return (t.expand(b) if t.ndim == 0 else t.reshape(b)).view(b, 1, 1, 1)


def sde_step_with_logprob(
    model_output: Tensor,
    sigma: Tensor | float,
    sigma_next: Tensor | float,
    sample: Tensor,
    *,
    sigma_max: Tensor | float,
    noise_level: float = 0.7,
    prev_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
    patch: int | tuple[int, int] | None = 1,
) -> SDEStep:
    """One Flow-GRPO SDE step.

    Args:
        model_output: velocity v [B, C, H, W] predicted at `sample` (any float dtype).
        sigma, sigma_next: current and next noise level (scalars or [B]); sigma_next < sigma.
        sample: x [B, C, H, W].
        sigma_max: sigmas[1] of the schedule, used in place of sigma when sigma == 1 (where
            sqrt(sigma / (1 - sigma)) is infinite), as Flow-GRPO does.
        noise_level: a (Flow-GRPO default 0.7).
        prev_sample: x' to score (training: the rollout's stored latent); None samples it.
        generator: for the noise when sampling.
        patch: transformer patch size on the latent (int or (ph, pw)); None = one token.
    Returns:
        SDEStep(prev_sample, log_prob [B, N], mean, std_dev_t).
    """
    if sample.shape != model_output.shape:
        raise ValueError(f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)} differ")
    x = sample.float()
    v = model_output.float()
    b = x.shape[0]
    s = _as_batch(sigma, b, x.device)
    s_next = _as_batch(sigma_next, b, x.device)
    s_max = torch.as_tensor(sigma_max, dtype=torch.float32, device=x.device)
    dt = s_next - s
    if bool((dt >= 0).any()):
        raise ValueError("sigma_next must be smaller than sigma (the sampler runs from noise to data)")
    g = torch.sqrt(s / (1 - torch.where(s == 1, s_max, s))) * noise_level
    mean = x * (1 + g**2 / (2 * s) * dt) + v * (1 + g**2 * (1 - s) / (2 * s)) * dt
    step_std = g * torch.sqrt(-dt)
    if prev_sample is None:
        # Drawn on the generator's device, then moved: a CPU generator gives the same noise
        # whether the latents live on the CPU or a GPU.
        gdev = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, device=gdev, dtype=torch.float32).to(x.device)
        prev_sample = mean + step_std * noise
    prev = prev_sample.detach().float()
    lp = -((prev - mean) ** 2) / (2 * step_std**2) - torch.log(step_std) - _HALF_LOG_2PI
    return SDEStep(prev_sample.float(), token_mean(lp, patch), mean, g)


def flow_grpo_kl(mean: Tensor, mean_ref: Tensor, std_dev_t: Tensor) -> Tensor:
    """Flow-GRPO's KL-to-reference term: mean over latent dims of (mu - mu_ref)^2, divided by
    2 g^2 (g = std_dev_t, not the step std), averaged over the batch. Inputs [B, C, H, W] and
    std_dev_t [B, 1, 1, 1] (or broadcastable); returns a scalar."""
    kl = ((mean - mean_ref) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (2 * std_dev_t**2)
    return kl.mean()
