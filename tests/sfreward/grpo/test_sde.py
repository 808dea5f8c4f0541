"""The per-token SDE step against a direct transcription of Flow-GRPO's `sd3_sde_with_logprob`."""
import math

import pytest
import torch

from sfreward.grpo.sde import flow_grpo_kl, sde_step_with_logprob, token_mean
from sfreward.grpo.trainer import flow_sigmas


def flow_grpo_reference(model_output, sigma, sigma_prev, sigma_max, sample, noise_level, prev_sample):
    """Flow-GRPO's formula as their code writes it (sd3_sde_with_logprob.py, one sigma per batch)."""
    model_output = model_output.float()
    sample = sample.float()
    prev_sample = prev_sample.float()
    dt = sigma_prev - sigma
    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * noise_level
    prev_sample_mean = sample * (1 + std_dev_t**2 / (2 * sigma) * dt) \
        + model_output * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    log_prob = (
        -((prev_sample.detach() - prev_sample_mean) ** 2) / (2 * ((std_dev_t * torch.sqrt(-1 * dt)) ** 2))
        - torch.log(std_dev_t * torch.sqrt(-1 * dt))
        - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi)))
    )
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
    return prev_sample, log_prob, prev_sample_mean, std_dev_t


@pytest.mark.parametrize("i", [0, 3, 9])
def test_one_token_equals_flow_grpo_per_sample_logprob(i):
    g = torch.Generator().manual_seed(i)
    sig = flow_sigmas(10)
    x, v = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    prev = torch.randn(3, 4, 8, 8, generator=g)
    ref_prev, ref_lp, ref_mean, ref_std = flow_grpo_reference(v, sig[i], sig[i + 1], sig[1], x, 0.7, prev)
    st = sde_step_with_logprob(v, sig[i], sig[i + 1], x, sigma_max=sig[1], noise_level=0.7,
                               prev_sample=prev, patch=None)
    assert st.log_prob.shape == (3, 1)
    torch.testing.assert_close(st.log_prob[:, 0], ref_lp, rtol=1e-6, atol=1e-5)  # fp32 reduction order
    torch.testing.assert_close(st.mean, ref_mean, rtol=0, atol=0)
    assert float(st.std_dev_t.flatten()[0]) == pytest.approx(float(ref_std))
    # The per-token log-probs (patch 2: 16 tokens) average to the same per-sample number.
    tok = sde_step_with_logprob(v, sig[i], sig[i + 1], x, sigma_max=sig[1], prev_sample=prev, patch=2)
    assert tok.log_prob.shape == (3, 16)
    torch.testing.assert_close(tok.log_prob.mean(-1), ref_lp, rtol=1e-6, atol=1e-5)


def test_per_token_values_localize():
    """A change of the sample inside one patch changes only that token's log-prob."""
    sig = flow_sigmas(4)
    x, v = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    prev = torch.randn(1, 4, 8, 8)
    a = sde_step_with_logprob(v, sig[1], sig[2], x, sigma_max=sig[1], prev_sample=prev, patch=2).log_prob
    prev2 = prev.clone()
    prev2[0, :, 2:4, 4:6] += 3.0          # token row 1, column 2 -> n = 1 * 4 + 2
    b = sde_step_with_logprob(v, sig[1], sig[2], x, sigma_max=sig[1], prev_sample=prev2, patch=2).log_prob
    changed = (a != b)[0].nonzero().flatten().tolist()
    assert changed == [6]


def test_sampled_step_has_the_stated_distribution_and_fp32():
    sig = flow_sigmas(10)
    x = torch.zeros(4096, 1, 2, 2, dtype=torch.bfloat16)
    v = torch.zeros_like(x)
    st = sde_step_with_logprob(v, sig[2], sig[3], x, sigma_max=sig[1], generator=torch.Generator().manual_seed(0))
    assert st.prev_sample.dtype == torch.float32 and st.log_prob.dtype == torch.float32
    step_std = float(st.std_dev_t[0]) * math.sqrt(float(sig[2] - sig[3]))
    assert float(st.prev_sample.std()) == pytest.approx(step_std, rel=0.03)


def test_token_mean_and_errors():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert token_mean(x, 2).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    with pytest.raises(ValueError, match="does not tile"):
        token_mean(x, 3)
    with pytest.raises(ValueError, match="sigma_next must be smaller"):
        sde_step_with_logprob(x, 0.5, 0.6, x, sigma_max=0.9)


def test_kl_is_flow_grpo_formula():
    m, r = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    g = torch.tensor([0.5, 0.25]).view(2, 1, 1, 1)
    want = (((m - r) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (2 * g**2)).mean()
    assert float(flow_grpo_kl(m, r, g)) == pytest.approx(float(want))
    assert float(flow_grpo_kl(m, m, g)) == 0.0
