"""One GRPO step of an SD3.5-Medium-sized SD3Transformer2DModel with LoRA, whole-image vs region
credit: time (sampling, then the training backward over every timestep) and peak memory.

No SD3.5 weights can be fetched here, so by default the transformer is built from the embedded
SD3.5-Medium config with random weights (timing and memory do not depend on the values);
`--pipeline DIR` loads a local diffusers pipeline's transformer instead. `--tiny` swaps in a
tiny config so that the script runs on a CPU (proves it works; the numbers say nothing about a
GPU). Results are appended to benchmarks/results/grpo.md with the exact command.

    python benchmarks/bench_grpo.py --tiny --device cpu                      # CPU smoke run
    python benchmarks/bench_grpo.py --device cuda --dtype bf16 --resolution 512 --group 8
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sfreward import credit  # noqa: E402
from sfreward.grpo.adapters import SD3Adapter, add_lora  # noqa: E402
from sfreward.grpo.trainer import Credit, GRPOConfig, backward, flow_sigmas, sample  # noqa: E402

# stabilityai/stable-diffusion-3.5-medium, transformer/config.json (2.5B parameters).
SD35_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                   num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                   pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                   dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
TINY = dict(sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=32, out_channels=16)
TEXT_LEN = 333   # SD3: 77 CLIP + 256 T5 tokens


def build(args):
    from diffusers import SD3Transformer2DModel
    if args.pipeline:
        m = SD3Transformer2DModel.from_pretrained(args.pipeline, subfolder="transformer")
        source = f"local pipeline {args.pipeline}"
    else:
        torch.manual_seed(0)
        with torch.device(args.device):   # random init on the card: seconds instead of a minute on CPU
            m = SD3Transformer2DModel(**(TINY if args.tiny else SD35_MEDIUM))
        source = "embedded tiny config" if args.tiny else "embedded SD3.5-Medium config, random weights"
    m.requires_grad_(False)
    return m, source


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB -> GiB (process peak RSS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny transformer config (CPU smoke run)")
    ap.add_argument("--pipeline", default=None, help="local diffusers SD3 pipeline directory")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--resolution", type=int, default=None, help="pixels (8x VAE); default 512, tiny 64")
    ap.add_argument("--group", type=int, default=4, help="rollouts (G) in the step")
    ap.add_argument("--steps", type=int, default=10, help="sampler steps T")
    ap.add_argument("--regions", type=int, default=4, help="regions per group in region mode")
    ap.add_argument("--lora-rank", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grpo.md"))
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    res = args.resolution or (64 if args.tiny else 512)
    base, source = build(args)
    model = add_lora(base, rank=args.lora_rank).to(dev, dtype)
    den = SD3Adapter(model)
    cfgm = base.config
    G, T, h = args.group, args.steps, res // 8
    n_tok = (h // den.patch) ** 2
    cond = {"prompt_embeds": torch.randn(G, TEXT_LEN, cfgm.joint_attention_dim, device=dev, dtype=dtype),
            "pooled": torch.randn(G, cfgm.pooled_projection_dim, device=dev, dtype=dtype)}
    sig = flow_sigmas(T, shift=3.0).to(dev)
    masks = torch.zeros(args.regions, res, res, dtype=torch.bool)
    for k in range(args.regions):   # vertical stripes as regions
        masks[k, :, k * res // args.regions:(k + 1) * res // args.regions] = True
    cov_region = credit.token_coverage(masks, token_px=8 * den.patch).to(dev)
    g = torch.Generator(device="cpu").manual_seed(0)
    rows = []
    for mode in ("whole", "region"):
        cfg = GRPOConfig(mode=mode, group_size=G, num_steps=T, beta=0.004, timestep_chunk=1)
        times_s, times_b = [], []
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                ro = sample(den, cond, (G, cfgm.out_channels, h, h), sig, 0.7, None)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t1 = time.perf_counter()
            R = torch.rand(1, G, args.regions, generator=g)
            cov = cov_region if mode == "region" else torch.ones(1, h // den.patch, h // den.patch)
            Rk = R if mode == "region" else R.mean(-1, keepdim=True)
            adv = credit.region_advantages(Rk, image_rewards=R.mean(-1))
            img = credit.region_advantages(R.mean(-1)[..., None]).advantages[0, :, 0]
            cr = Credit(img.to(dev), adv.advantages[0].to(dev), adv.mask[0].to(dev),
                        cov[None].expand(G, *cov.shape).to(dev))
            model.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                backward(den, ro, cr, cfg)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times_s.append(t1 - t0)
            times_b.append(time.perf_counter() - t1)
        rows.append((mode, min(times_s), min(times_b), peak_memory_gb(dev)))
    n_params = sum(p.numel() for p in base.parameters())
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    whole, region = rows
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [f"\n## GRPO step, SD3 transformer + LoRA ({datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC})", "",
             f"Command: `{cmd}`  ",
             f"Model: {source}; {n_params / 1e6:.1f} M parameters, LoRA rank {args.lora_rank} ({n_lora / 1e6:.2f} M "
             f"trainable); {args.device} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or platform.machine()}), "
             f"{args.dtype}, torch threads {torch.get_num_threads()}. {res}x{res} px -> {h}x{h} latent -> {n_tok} tokens; "
             f"G={G}, T={T}, {args.regions} regions, beta 0.004 (reference = LoRA disabled), backward per timestep. "
             f"Best of {args.repeats}.", "",
             "| mode | sampling s | training backward s | peak memory GiB |", "|---|---|---|---|"]
    for mode, s, b, m in rows:
        lines.append(f"| {mode} | {s:.3f} | {b:.3f} | {m:.2f} |")
    lines += ["", f"Region / whole training time: {region[2] / whole[2]:.3f}x "
              f"({'peak memory: process RSS, not comparable across rows' if dev.type != 'cuda' else 'peak memory: CUDA allocator'}).", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    if not out.exists():
        out.write_text("# GRPO step benchmarks (benchmarks/bench_grpo.py)\n")
    with open(out, "a") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
