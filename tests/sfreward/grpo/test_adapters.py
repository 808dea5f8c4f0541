"""Tiny diffusers flow models of the three families plug into the sampler and the GRPO loss."""
import pytest
import torch

from sfreward.grpo.adapters import FluxAdapter, SD3Adapter, UNetAdapter, add_lora
from sfreward.grpo.trainer import Credit, GRPOConfig, backward, flow_sigmas, sample

B, C, HW = 2, 4, 8


def tiny_sd3():
    from diffusers import SD3Transformer2DModel
    torch.manual_seed(0)
    m = SD3Transformer2DModel(sample_size=HW, patch_size=2, in_channels=8, num_layers=2, attention_head_dim=16,
                              num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=32,
                              pooled_projection_dim=32, out_channels=4)
    cond = {"source": torch.randn(B, 4, HW, HW), "prompt_embeds": torch.randn(B, 5, 32), "pooled": torch.randn(B, 32)}
    return SD3Adapter(m), cond


def tiny_flux():
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(0)
    m = FluxTransformer2DModel(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                               num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                               axes_dims_rope=(4, 6, 6))
    cond = {"source": torch.randn(B, 4, HW, HW), "prompt_embeds": torch.randn(B, 5, 32), "pooled": torch.randn(B, 32)}
    return FluxAdapter(m, latent_channels=4), cond


def tiny_unet():
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    m = UNet2DModel(sample_size=HW, in_channels=8, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                    norm_num_groups=8)
    return UNetAdapter(m, latent_channels=4, patch=2), {"source": torch.randn(B, 4, HW, HW)}


@pytest.mark.parametrize("make", [tiny_sd3, tiny_flux, tiny_unet], ids=["sd3", "flux", "unet"])
def test_adapter_samples_and_trains_per_token(make):
    den, cond = make()
    sig = flow_sigmas(3)
    ro = sample(den, cond, (B, C, HW, HW), sig, 0.7, torch.Generator().manual_seed(0))
    n = (HW // den.patch) ** 2
    assert ro.latents.shape == (B, 4, C, HW, HW) and ro.log_probs.shape == (B, 3, n)
    assert torch.isfinite(ro.log_probs).all()
    # The region loss reaches the parameters through the per-token log-probs.
    cov = torch.zeros(B, 2, HW // den.patch, HW // den.patch)
    cov[:, 0, :2] = 1
    cov[:, 1, 2:] = 1
    cr = Credit(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), torch.ones(B, 2, dtype=torch.bool), cov)
    den.module.zero_grad()
    backward(den, ro, cr, GRPOConfig(mode="region", beta=0.0))
    grads = [p.grad for p in den.module.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_flux_pack_roundtrip_is_row_major():
    x = torch.randn(1, 4, 4, 6)
    t = FluxAdapter.pack(x)
    assert t.shape == (1, 6, 16)
    torch.testing.assert_close(t[0, 1 * 3 + 2], x[0, :, 2:4, 4:6].reshape(4, 4).reshape(-1))
    torch.testing.assert_close(FluxAdapter.unpack(t, 4, 6), x)


def test_lora_sd3_trains_only_adapters_and_disable_gives_reference():
    den, cond = tiny_sd3()
    lora = add_lora(den.module, rank=4)
    den = SD3Adapter(lora)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)   # move the policy off the base model
    sig = flow_sigmas(2)
    ro = sample(den, cond, (B, C, HW, HW), sig, 0.7, torch.Generator().manual_seed(1))
    cr = Credit(torch.tensor([1.0, -1.0]), torch.zeros(B, 1), torch.ones(B, 1, dtype=torch.bool), torch.ones(B, 1, 4, 4))
    from sfreward.grpo.trainer import grpo_loss
    _, st = grpo_loss(den, ro, cr, GRPOConfig(mode="whole", beta=0.1))
    assert st["kl"] > 0            # reference = adapter disabled, which differs from the policy
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.zero_()
    _, st = grpo_loss(den, ro, cr, GRPOConfig(mode="whole", beta=0.1))
    assert st["kl"] == 0.0
