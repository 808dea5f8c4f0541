"""Trainer: whole mode is Flow-GRPO; region mode with one whole-image region is whole mode."""
import copy

import torch

from sfreward import credit
from sfreward.grpo.adapters import UNetAdapter
from sfreward.grpo.trainer import GRPOConfig, backward, flow_sigmas, grpo_loss, make_credit, sample

P, G, C, HW = 2, 4, 3, 8


def den():
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    m = UNet2DModel(sample_size=HW, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                    norm_num_groups=4)
    return UNetAdapter(m, latent_channels=3, patch=2)


def rollouts(d):
    return sample(d, {}, (P * G, C, HW, HW), flow_sigmas(3), 0.7, torch.Generator().manual_seed(0))


def grads(d):
    return torch.cat([p.grad.flatten() for p in d.module.parameters() if p.grad is not None])


def test_region_mode_with_one_whole_image_region_is_whole_mode():
    d = den()
    ref = copy.deepcopy(d)
    with torch.no_grad():
        for p in d.module.parameters():
            p.add_(0.01 * torch.randn_like(p))      # policy != reference: the KL term is live
    ro = rollouts(d)
    img_r = torch.rand(P, G, generator=torch.Generator().manual_seed(3))
    cov = torch.ones(P, 1, HW // 2, HW // 2)
    cr = make_credit(img_r[..., None], torch.ones(P, G, 1, dtype=torch.bool), img_r, cov, GRPOConfig())
    torch.testing.assert_close(cr.region_adv[:, 0], cr.image_adv)
    losses, gs = {}, {}
    for mode in ("whole", "region"):
        d.module.zero_grad()
        cfg = GRPOConfig(mode=mode, clip_eps=0.2, beta=0.05)
        losses[mode], _ = grpo_loss(d, ro, cr, cfg, reference=ref)
        losses[mode].backward()
        gs[mode] = grads(d)
    torch.testing.assert_close(losses["region"], losses["whole"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gs["region"], gs["whole"], rtol=1e-5, atol=1e-7)


def test_whole_mode_is_flow_grpo_loss_on_per_sample_logprobs():
    """Whole mode = Flow-GRPO: advantages (r - mean) / (std + 1e-4) per group, clipped; ratio from
    the all-dims mean log-prob; beta = 0 -> exactly `flow_grpo_loss`."""
    d = den()
    ro = rollouts(d)
    r = torch.rand(P, G, generator=torch.Generator().manual_seed(4))
    cr = make_credit(r[..., None].repeat(1, 1, 2), torch.ones(P, G, 2, dtype=torch.bool), r,
                     torch.ones(P, 2, 4, 4) / 2, GRPOConfig())
    want_adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + 1e-4)).clamp(-5, 5).flatten()
    torch.testing.assert_close(cr.image_adv, want_adv)
    loss, _ = grpo_loss(d, ro, cr, GRPOConfig(mode="whole", clip_eps=0.2, beta=0.0))
    # On-policy: ratio = 1 -> loss = -mean(A) (= 0 up to rounding for normalized groups); the
    # gradient is what matters: equal to flow_grpo_loss's on the same log-probs.
    assert abs(float(loss) + float(want_adv.mean())) < 1e-5


def test_chunked_backward_equals_full_backward():
    d = den()
    ro = rollouts(d)
    R = torch.rand(P, G, 3, generator=torch.Generator().manual_seed(5))
    masks = torch.zeros(P, 3, HW, HW, dtype=torch.bool)
    masks[:, 0, :4] = True
    masks[:, 1, 4:, :4] = True
    masks[:, 2, 4:, 4:] = True
    cov = credit.token_coverage(masks, token_px=2)
    cr = make_credit(R, torch.ones_like(R, dtype=torch.bool), R.mean(-1), cov, GRPOConfig())
    out = {}
    for chunk in (None, 1):
        d.module.zero_grad()
        backward(d, ro, cr, GRPOConfig(mode="region", beta=0.0, timestep_chunk=chunk))
        out[chunk] = grads(d)
    # Chunking only reorders float sums (and the thread count, set by earlier tests, changes
    # reduction order too): equal up to rounding relative to the gradient's own scale.
    scale = float(out[None].abs().max())
    assert scale > 0
    torch.testing.assert_close(out[1], out[None], rtol=1e-4, atol=1e-5 * scale)
