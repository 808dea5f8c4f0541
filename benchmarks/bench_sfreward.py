"""SFReward benchmarks.

CPU (default): scoring throughput (images/s, all regions scored) batched vs one image per
call; training step time batched vs per-image (gradient accumulation over single images);
localization AUROC on held-out photos after training with region labels vs whole-image
labels only (same architecture, data, steps).

Per preset (sfreward.model.presets): CPU scoring pairs/s, each preset built exactly as
`sfr train --preset NAME --set model.backbone_path=DIR` builds it; `base` and `large` load
fake local checkpoints of their architecture (random weights, saved with save_pretrained:
`base` a full SigLIP folder with its text tower and a locally trained tokenizer, `large` a
vision-only so400m-class folder). A pair = (source, edited) with all its regions scored.

--gpu: the `base` preset (same fake checkpoint, text tower included) at 384 px in bf16:
pairs/s with all regions, and model FLOPs utilisation = FLOPs of one forward (counted by
torch.utils.flop_counter) / measured time / the card's measured bf16 matmul rate. Skipped with
a note when CUDA is not available; `--gpu-dry-run` runs that code path on the CPU with the
tiny preset (checks it, writes nothing).

    .venv/bin/python benchmarks/bench_sfreward.py [--gpu | --gpu-dry-run] [--skip-learning]
        [--steps 600] [--presets tiny,demo,base,large]
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


def fake_checkpoint(root: Path, preset: str) -> Path | None:
    """A local checkpoint folder of the preset's architecture with random weights (None for
    the checkpoint-free presets). Built once per root."""
    import transformers as tf

    from sfreward.model.presets import get_preset
    if preset not in ("base", "large"):
        return None
    path = root / f"fake-{preset}"
    if (path / "config.json").is_file():
        return path
    torch.manual_seed(0)
    vision = get_preset(preset).model["backbone_config"]
    if preset == "base":  # SigLIP-base: vision + text tower + tokenizer, as downloaded
        from tests.sfreward.model.checkpoints import save_tokenizer
        text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    vocab_size=32000, max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3)
        net = tf.SiglipModel(tf.SiglipConfig(vision_config=vision, text_config=text))
        net.save_pretrained(str(path))
        save_tokenizer(path)
    else:                 # so400m-class vision tower only (its text tower would double the memory)
        net = tf.SiglipVisionModel(tf.SiglipVisionConfig(**vision))
        net.save_pretrained(str(path))
    del net
    return path


def build_preset(preset: str, root: Path) -> SFRewardModel:
    """The model `sfr train --preset NAME [--set model.backbone_path=<fake folder>]` builds."""
    from sfreward.model.presets import model_config_dict
    ck = fake_checkpoint(root, preset)
    overrides = {"backbone_path": str(ck)} if ck else {}
    torch.manual_seed(0)
    return SFRewardModel(SFRewardConfig.from_dict(model_config_dict(preset, overrides))).eval()


def _flops(m: SFRewardModel, src, edt, txt, masks) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        m.predict(src, edt, txt, masks)
    return float(fc.get_total_flops())


PAIRS_ON_CPU = {"tiny": 16, "demo": 16, "base": 2, "large": 1}


def bench_presets(names: list[str], root: Path, k: int = 6) -> list[dict]:
    rows = []
    for name in names:
        m = build_preset(name, root)
        b = PAIRS_ON_CPU.get(name, 2)
        src, edt, txt, masks = _inputs(b, k, m.config.image_size)
        flops = _flops(m, src, edt, txt, masks)
        t = _time(lambda: m.predict(src, edt, txt, masks), reps=1 if name in ("base", "large") else 3)
        bc = m.config.backbone_config
        rows.append({"preset": name, "image_size": m.config.image_size, "patch": bc["patch_size"],
                     "grid": m.config.image_size // bc["patch_size"], "width": bc["hidden_size"],
                     "layers": bc["num_hidden_layers"], "text": m.config.text_encoder, "pairs": b,
                     "n_params": sum(p.numel() for p in m.parameters()), "pairs_s": b / t,
                     "gflop_per_pair": flops / b / 1e9})
        del m
    return rows


def bench_gpu(root: Path, batches: tuple[int, ...] = (64, 128, 256), k: int = 8, reps: int = 10,
              dry_run: bool = False) -> dict | str:
    """base preset, bf16: pairs/s and model FLOPs utilisation at each batch size (the best one is
    the headline). Each timed call is a whole `predict` (text tokenization, mask packing and the
    forward included). dry_run: the same code on the CPU with the tiny preset and a 256 x 256
    matmul (checks the path; numbers meaningless)."""
    if not dry_run and not torch.cuda.is_available():
        return "skipped: CUDA is not available on this machine"
    dev = torch.device("cpu" if dry_run else "cuda")
    sync = (lambda: None) if dry_run else torch.cuda.synchronize
    n = 256 if dry_run else 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    mm = _time(lambda: a @ a, 3 if dry_run else 50, warmup=3, sync=sync)
    peak = 2 * n ** 3 / mm
    if dry_run:
        batches, reps = (2, 3), 1
    m = build_preset("tiny" if dry_run else "base", root).to(dev, torch.bfloat16)
    rows = []
    for b in batches:
        src, edt, txt, masks = _inputs(b, k, m.config.image_size, dev, torch.bfloat16)
        with torch.inference_mode():
            flops = _flops(m, src, edt, txt, masks)
            t = _time(lambda: m.predict(src, edt, txt, masks), reps, warmup=3, sync=sync)
        rows.append({"batch": b, "pairs_s": b / t, "flops_per_pair": flops / b,
                     "model_tflops_per_s": flops / t / 1e12, "mfu": flops / t / peak})
        print(f"batch {b}: {b / t:.0f} pairs/s, MFU {100 * flops / t / peak:.1f}%", flush=True)
    best = max(rows, key=lambda r: r["pairs_s"])
    return {"card": "cpu (dry run)" if dry_run else torch.cuda.get_device_name(0), "rows": rows,
            "batch": best["batch"], "regions_per_image": k, "image_size": m.config.image_size,
            "pairs_s": best["pairs_s"], "model_tflops_per_s": best["model_tflops_per_s"],
            "matmul_tflops_per_s": peak / 1e12, "mfu": best["mfu"],
            "gflop_per_pair": best["flops_per_pair"] / 1e9,
            "n_params": sum(p.numel() for p in m.parameters())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true", help="the GPU benchmark only (base preset, bf16)")
    ap.add_argument("--gpu-dry-run", action="store_true", help="run the GPU code path on the CPU (tiny); no output file")
    ap.add_argument("--presets", default="tiny,demo,base,large", help="presets for the CPU per-preset table ('' = none)")
    ap.add_argument("--work", default="", help="folder for the fake checkpoints (default: a temporary one)")
    ap.add_argument("--skip-learning", action="store_true")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: faster than 2 on a CPU shared with other jobs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sfreward.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    root = Path(args.work or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    if args.gpu_dry_run:
        print(bench_gpu(root, dry_run=True))
        return 0
    cmd = "python benchmarks/bench_sfreward.py " + " ".join(sys.argv[1:])
    lines = [f"# SFReward benchmarks", "", f"- command: `{cmd.strip()}`",
             f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
             f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads "
             f"(2-core CPU shared with other jobs), torch {torch.__version__}", ""]
    if args.gpu:
        g = bench_gpu(root)
        lines += ["## GPU: base preset (SigLIP-base class with its text tower), 384 px, bf16", ""]
        if isinstance(g, str):
            lines += [g, ""]
        else:
            lines += [f"- card: {g['card']}", f"- batch {g['batch']} pairs x {g['regions_per_image']} regions, "
                      f"{g['n_params'] / 1e6:.1f} M params, {g['gflop_per_pair']:.1f} GFLOP/pair",
                      f"- **{g['pairs_s']:.0f} pairs/s** at batch {g['batch']} (source + edited, all regions scored; "
                      "target >= 1,000 on an H100)",
                      f"- model {g['model_tflops_per_s']:.1f} TFLOP/s vs measured bf16 matmul "
                      f"{g['matmul_tflops_per_s']:.1f} TFLOP/s: **MFU {100 * g['mfu']:.1f}%**", "",
                      "| batch (pairs) | pairs/s | model TFLOP/s | MFU |", "|---|---|---|---|"]
            lines += [f"| {r['batch']} | {r['pairs_s']:.0f} | {r['model_tflops_per_s']:.1f} | {100 * r['mfu']:.1f}% |"
                      for r in g["rows"]]
            lines += ["", "Each timed call is one `SFRewardModel.predict` (tokenization, mask packing, both "
                      "images' forward, region pooling and heads), mean of 10 after 3 warm-ups; FLOPs from "
                      "torch.utils.flop_counter on the same call; the matmul rate is an 8192^3 bf16 product "
                      "on the same card.", ""]
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
        names = [n for n in args.presets.split(",") if n]
        if names:
            rows = bench_presets(names, root)
            ref = rows[0]
            lines += ["## CPU scoring per preset", "",
                      f"One forward per batch of pairs (source + edited, 6 regions each), {torch.get_num_threads()} "
                      "thread(s); base and large load fake local checkpoints of their architecture (random "
                      "weights), so few pairs are timed (a FLOP-counting call, a warm-up call, then the timed call). "
                      f"Ratio: pairs/s relative to `{ref['preset']}` in the same run.", "",
                      "| preset | px | patch | tokens | width x layers | text | params (M) | GFLOP/pair | pairs timed | pairs/s | ratio |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in rows:
                lines.append(f"| {r['preset']} | {r['image_size']} | {r['patch']} | {r['grid']}x{r['grid']} | "
                             f"{r['width']} x {r['layers']} | {r['text']} | {r['n_params'] / 1e6:.1f} | "
                             f"{r['gflop_per_pair']:.2f} | {r['pairs']} | {r['pairs_s']:.3g} | "
                             f"{r['pairs_s'] / ref['pairs_s']:.3g}x |")
            lines.append("")
            print("\n".join(lines[-(len(rows) + 5):]))
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
        out.write_text(text + "\n\n" + "\n".join(next(lines[i:] for i, x in enumerate(lines)
                                                    if x.startswith("## GPU:"))) + "\n")
    else:
        out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
