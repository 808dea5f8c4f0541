"""SFReward benchmarks.

CPU (default): scoring throughput (images/s, all regions scored) batched vs one image per
call; training step time batched vs per-image (gradient accumulation over single images);
localization AUROC on held-out photos after training with region labels vs whole-image
labels only (same architecture, data, steps).

--gpu: a SigLIP-base-sized backbone (768 wide, 12 layers, patch 16) at 384 px in bf16:
images/s and the fraction of the card's measured bf16 matmul rate the model reaches.
Skipped with a note when CUDA is not available.

    .venv/bin/python benchmarks/bench_sfreward.py [--gpu] [--skip-learning] [--steps 600]
Writes benchmarks/results/sfreward.md (or --out).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sfreward.model import SFRewardConfig, SFRewardModel  # noqa: E402

SMALL = dict(backbone_config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                  num_attention_heads=4, patch_size=16), image_size=128, hidden=128)
SIGLIP_BASE = dict(backbone_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, patch_size=16), image_size=384, hidden=256)


def _inputs(b: int, k: int, s: int, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    src = torch.rand(b, 3, s, s, generator=g)
    edt = (src + 0.1 * torch.rand(b, 3, s, s, generator=g)).clamp(0, 1)
    masks = []
    for _ in range(b):
        lab = torch.randint(0, k, (s // 16, s // 16), generator=g).repeat_interleave(16, 0).repeat_interleave(16, 1)
        masks.append(torch.stack([lab == i for i in range(k)]).to(device))
    return src.to(device, dtype), edt.to(device, dtype), [f"edit {i}" for i in range(b)], masks


def _time(fn, reps: int, warmup: int = 1, sync=lambda: None) -> float:
    for _ in range(warmup):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t) / reps


def bench_scoring(b: int = 16, k: int = 6, reps: int = 3) -> dict:
    torch.manual_seed(0)
    m = SFRewardModel(SFRewardConfig(**SMALL)).eval()
    src, edt, txt, masks = _inputs(b, k, m.config.image_size)
    batched = _time(lambda: m.predict(src, edt, txt, masks), reps)
    single = _time(lambda: [m.predict(src[i:i + 1], edt[i:i + 1], txt[i:i + 1], masks[i:i + 1]) for i in range(b)], reps)
    return {"batch": b, "regions_per_image": k, "batched_img_s": b / batched, "per_image_img_s": b / single,
            "speedup": single / batched, "n_params": sum(p.numel() for p in m.parameters())}


def bench_train_step(b: int = 8, k: int = 6, reps: int = 3) -> dict:
    from sfreward.train import losses
    torch.manual_seed(0)
    m = SFRewardModel(SFRewardConfig(**SMALL))
    m.freeze_unused_parameters()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    src, edt, txt, masks = _inputs(b, k, m.config.image_size)
    tgt = torch.rand(b * k, 2) * 25

    def step(idx_groups):
        for idx in idx_groups:
            packed = torch.cat([masks[i] for i in idx]).float()
            ri = torch.repeat_interleave(torch.arange(len(idx)), k)
            out = m(src[idx], edt[idx], [txt[i] for i in idx], packed, ri)
            sel = torch.cat([torch.arange(i * k, (i + 1) * k) for i in idx])
            s, n = losses.gaussian_nll_sum(out["success_mu"], out["success_logvar"], tgt[sel, 0], 0.5)
            (s / n / len(idx_groups)).backward()
        opt.step()
        opt.zero_grad()
    batched = _time(lambda: step([list(range(b))]), reps)
    per_image = _time(lambda: step([[i] for i in range(b)]), reps)
    return {"batch": b, "batched_ms": batched * 1e3, "per_image_ms": per_image * 1e3, "speedup": per_image / batched}


def bench_learning(steps: int) -> dict:
    from sfreward import evaluate as ev
    from sfreward.train.trainer import train
    from tests.fixtures.sfreward_data import tiny_train_config, write_dataset
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "ds", n_train=100, n_val=2, n_test=20)
        for mode in ("region", "image"):
            t = time.perf_counter()
            res = train(tiny_train_config(data, Path(tmp) / mode, max_steps=steps, batch_size=8, lr=1e-3,
                                          warmup_steps=10, label_mode=mode))
            m = ev.evaluate(SFRewardModel.from_pretrained(res.model_dir), data, "test")
            out[mode] = {k: m[k] for k in ("localization_auroc", "localization_top1", "corrupt_top1",
                                           "region_srcc_mean", "pairwise_accuracy", "n_localization")}
            out[mode]["train_s"] = time.perf_counter() - t
    return out


def bench_gpu(b: int = 32, k: int = 8, reps: int = 10) -> dict | str:
    if not torch.cuda.is_available():
        return "skipped: CUDA is not available on this machine"
    from torch.utils.flop_counter import FlopCounterMode
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    mm = _time(lambda: a @ a, 20, warmup=3, sync=sync)
    peak = 2 * n ** 3 / mm
    torch.manual_seed(0)
    m = SFRewardModel(SFRewardConfig(**SIGLIP_BASE)).to(dev, torch.bfloat16).eval()
    src, edt, txt, masks = _inputs(b, k, 384, dev, torch.bfloat16)
    with FlopCounterMode(display=False) as fc:
        m.predict(src, edt, txt, masks)
    flops = fc.get_total_flops()
    t = _time(lambda: m.predict(src, edt, txt, masks), reps, warmup=3, sync=sync)
    return {"card": torch.cuda.get_device_name(0), "batch": b, "regions_per_image": k,
            "img_s": b / t, "model_tflops_per_s": flops / t / 1e12, "matmul_tflops_per_s": peak / 1e12,
            "fraction_of_matmul": flops / t / peak, "gflops_per_image": flops / b / 1e9,
            "n_params": sum(p.numel() for p in m.parameters())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--skip-learning", action="store_true")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: faster than 2 on a CPU shared with other jobs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sfreward.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cmd = "python benchmarks/bench_sfreward.py " + " ".join(sys.argv[1:])
    lines = [f"# SFReward benchmarks", "", f"- command: `{cmd.strip()}`",
             f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
             f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads "
             f"(2-core CPU shared with other jobs), torch {torch.__version__}", ""]
    if args.gpu:
        g = bench_gpu()
        lines += ["## GPU: SigLIP-base-sized backbone, 384 px, bf16", ""]
        if isinstance(g, str):
            lines += [g, ""]
        else:
            lines += [f"- card: {g['card']}", f"- batch {g['batch']} images x {g['regions_per_image']} regions, "
                      f"{g['n_params'] / 1e6:.1f} M params, {g['gflops_per_image']:.1f} GFLOP/image",
                      f"- **{g['img_s']:.0f} images/s** (all regions scored)",
                      f"- model {g['model_tflops_per_s']:.1f} TFLOP/s vs measured bf16 matmul "
                      f"{g['matmul_tflops_per_s']:.1f} TFLOP/s: **{100 * g['fraction_of_matmul']:.1f}%**", ""]
        print("\n".join(lines))
    else:
        s = bench_scoring()
        lines += ["## CPU scoring throughput (small SigLIP: 128 wide, 4 layers, patch 16, 128 px)", "",
                  f"{s['n_params'] / 1e6:.2f} M params; {s['batch']} images x {s['regions_per_image']} regions.", "",
                  "| mode | images/s |", "|---|---|",
                  f"| batched (one forward for all images and regions) | {s['batched_img_s']:.1f} |",
                  f"| one image per call | {s['per_image_img_s']:.1f} |",
                  f"| ratio batched / per-image | {s['speedup']:.2f}x |", ""]
        print("\n".join(lines[-9:]))
        t = bench_train_step()
        lines += ["## CPU training step (same model, 8 images x 6 regions, NLL loss + AdamW)", "",
                  "| mode | ms/step |", "|---|---|", f"| batched | {t['batched_ms']:.0f} |",
                  f"| per-image (grad accumulation over 8 single images) | {t['per_image_ms']:.0f} |",
                  f"| ratio per-image / batched | {t['speedup']:.2f}x |", ""]
        print("\n".join(lines[-7:]))
        if not args.skip_learning:
            torch.set_num_threads(1)
            r = bench_learning(args.steps)
            lines += [f"## Localization on held-out photos: region labels vs whole-image labels", "",
                      f"Synthetic export from skimage photos (100 groups x 3 rollouts for training, 20 groups x 3 "
                      f"held-out on other photos), one region damaged (blur/noise/recolor) in 80% of rollouts; "
                      f"default tiny model (64 px), {args.steps} steps of batch 8, 1 thread. "
                      f"'image' = every region gets the image's overall score as its label.", "",
                      "| labels | localization AUROC | bad region lowest | corrupt-one-region top-1 | region SRCC | pairwise acc | train s |",
                      "|---|---|---|---|---|---|---|"]
            for mode, v in r.items():
                lines.append(f"| {mode} | {v['localization_auroc']:.3f} | {v['localization_top1']:.3f} | "
                             f"{v['corrupt_top1']:.3f} | {v['region_srcc_mean']:.3f} | "
                             f"{v['pairwise_accuracy']:.3f} | {v['train_s']:.0f} |")
            lines += ["", f"n = {r['region']['n_localization']} held-out samples with exactly one bad region.", ""]
            print("\n".join(lines[-8:]))
    out = Path(args.out)
    if args.gpu and out.exists():
        # keep the CPU results; append or replace the GPU section
        text = out.read_text().split("\n## GPU:")[0].rstrip()
        out.write_text(text + "\n\n" + "\n".join(lines[lines.index("## GPU: SigLIP-base-sized backbone, 384 px, bf16"):]) + "\n")
    else:
        out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
