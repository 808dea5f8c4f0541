"""Region proposals: a group of G rollouts proposed once vs G independent proposals vs a naive
loop of SamAutomaticMaskGenerator per image, with the tiny SAM and the classical proposer.

    .venv/bin/python benchmarks/bench_regions.py                  # CPU, 512 px, G=8
    .venv/bin/python benchmarks/bench_regions.py --gpu-vitb       # vit_b random weights, 1024 px

Target: a group of 8 costs at most 1/3 of 8 independent proposals (source embedded once).
Writes benchmarks/results/regions.md (or regions_gpu.md for --gpu-vitb).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segment_anything import SamAutomaticMaskGenerator  # noqa: E402

from sfreward.regions import ProposerConfig, propose_group  # noqa: E402
from sfreward.regions.sam import embed_images, load_sam, save_tiny_sam  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
NOTE = ("Notes: the naive loop pays two encoder calls per sample and SamAutomaticMaskGenerator's pure-Python RLE of every surviving mask at full resolution; with random weights and thresholds 0 all 3 x points_per_side^2 masks survive and are noisy, so this baseline is a worst case: with trained weights and default thresholds the gap is smaller. The fair comparison for the target is group vs independent through the same code path. The group path embeds the source once and `group_edited_prompts` (2) edited images in batched encoder calls, runs the point grid once, and computes the source's Lab image once; what still grows with G is one change map per rollout (~50 ms CPU at 512 px).")


def photo(fn, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(fn()).resize((size, size), Image.BILINEAR))


def workload(size: int, g: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A real source photo and G rollouts, each pasting another photo into a random box."""
    rng = np.random.default_rng(seed)
    src = photo(skdata.astronaut, size)
    donors = [photo(f, size) for f in (skdata.chelsea, skdata.coffee, skdata.rocket)]
    edits = []
    for i in range(g):
        w, h = rng.integers(size // 8, size // 3, size=2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        e = src.copy()
        e[y:y + h, x:x + w] = donors[i % 3][y:y + h, x:x + w]
        edits.append(e)
    return src, edits


def timed(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()}-core CPU VM shared with other jobs ({platform.machine()}), torch "
            f"{torch.__version__}, {torch.get_num_threads()} intra-op threads, load average {load}")


def cpu_bench(args) -> str:
    src, edits = workload(args.size, args.group)
    tmp = Path(tempfile.mkdtemp())
    ckpt = save_tiny_sam(tmp / "sam_tiny_bench.pth")
    # Random weights: SAM's default quality thresholds would drop every mask; with 0 every
    # mask survives filtering, the heaviest case for post-processing.
    sam_cfg = ProposerConfig(model_type="tiny", checkpoint=str(ckpt), device="cpu",
                             points_per_side=args.points_per_side, pred_iou_thresh=0.0,
                             stability_score_thresh=0.0)
    cls_cfg = ProposerConfig()
    rows = []
    for label, cfg in (("tiny SAM", sam_cfg), ("classical", cls_cfg)):
        propose_group(src, edits[:1], cfg)  # warm-up (model load, allocations)
        group = timed(lambda: propose_group(src, edits, cfg), args.repeats)
        indep = timed(lambda: [propose_group(src, [e], cfg) for e in edits], args.repeats)
        rows.append((label, group, indep))

    # Naive baseline: SamAutomaticMaskGenerator on the source and on the edited image of each
    # sample (2 encoder calls + full-resolution RLE post-processing per image). Measured on
    # `naive_samples` samples and scaled to G: it is far too slow to run all G on this box.
    sam = load_sam(ckpt, "tiny", "cpu")
    amg = SamAutomaticMaskGenerator(sam, points_per_side=args.points_per_side, pred_iou_thresh=0.0,
                                    stability_score_thresh=0.0)
    n_naive = min(args.naive_samples, args.group)
    t0 = time.perf_counter()
    for e in edits[:n_naive]:
        amg.generate(src)
        amg.generate(e)
    naive_per_sample = (time.perf_counter() - t0) / n_naive
    naive = naive_per_sample * args.group

    # Encoder batching on its own (G+1 images).
    imgs = [src] + edits
    enc1 = timed(lambda: embed_images(sam, imgs, batch_size=1), args.repeats)
    enc4 = timed(lambda: embed_images(sam, imgs, batch_size=4), args.repeats)

    g = args.group
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "cd /work/main && .venv/bin/python benchmarks/bench_regions.py " + " ".join(sys.argv[1:])
    lines = [
        "# Region proposals: group-consistent vs independent vs naive",
        "",
        f"- date: {now}",
        f"- machine: {machine()}",
        f"- command: `{cmd.strip()}`",
        f"- workload: source = skimage astronaut at {args.size}x{args.size}; G={g} rollouts, each "
        "pasting chelsea/coffee/rocket pixels into a random box (seed 0); tiny SAM = genuine "
        "`Sam` (embed 64, depth 2, img_size 256) with random weights, quality thresholds 0 (every "
        f"mask survives), points_per_side={args.points_per_side}; classical = change map + "
        f"Felzenszwalb segments; median and min of {args.repeats} runs after a warm-up",
        "",
        f"| proposer | group of {g} (s, median / min) | {g} independent (s) | group / independent "
        "| proposals/s, group | proposals/s, independent |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, (gm, gmin), (im, imin) in rows:
        lines.append(f"| {label} | {gm:.2f} / {gmin:.2f} | {im:.2f} / {imin:.2f} | "
                     f"**{gm / im:.2f}** | {g / gm:.1f} | {g / im:.1f} |")
    sam_group = rows[0][1][0]
    lines += [
        "",
        f"Naive loop (SamAutomaticMaskGenerator on source and edited image per sample, tiny SAM): "
        f"{naive_per_sample:.2f} s per sample, measured on {n_naive} sample(s), so {naive:.1f} s "
        f"for {g}; the group path is **{naive / sam_group:.1f}x** faster "
        f"(ratio {sam_group / naive:.3f}).",
        "",
        f"Image encoder alone, {g + 1} images, tiny SAM on CPU: batch 1 {enc1[0]:.3f} s, "
        f"batch 4 {enc4[0]:.3f} s (x{enc1[0] / enc4[0]:.2f}; batching pays mostly on GPU).",
        "",
    ]
    ratio = rows[0][1][0] / rows[0][2][0]
    lines.append(f"Target: SAM group of {g} <= 1/3 of {g} independent proposals -> "
                 f"{'met' if ratio <= 1 / 3 else 'NOT met'} ({ratio:.2f}).")
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


def gpu_vitb(args) -> str | None:
    """vit_b with random weights at 1024x1024: image embeddings/s and peak memory per batch
    size (fp32 and bf16 autocast), plus a group of G vs G independent proposals."""
    from sfreward.regions.sam import BUILDERS

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipping the vit_b GPU benchmark", file=sys.stderr)
        return None
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "CPU"
    torch.manual_seed(0)
    sam = BUILDERS[args.model]().to(dev).eval()
    size = args.gpu_size
    lines = []
    for dtype in (torch.float32, torch.bfloat16):
        for bs in args.gpu_batches:
            x = torch.randint(0, 256, (bs, 3, size, size), device=dev).float()
            x = sam.preprocess(x)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)

            def run():
                with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                    sam.image_encoder(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
            run()
            med, mn = timed(run, args.repeats)
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
            lines.append(f"| {str(dtype).split('.')[-1]} | {bs} | {med * 1000:.1f} | {bs / med:.2f} | {peak:.2f} |")
            del x

    # End to end through load_sam: random vit_b weights saved as a checkpoint file.
    tmp = Path(tempfile.mkdtemp())
    ckpt = tmp / f"sam_{args.model}_random.pth"
    torch.save(sam.state_dict(), ckpt)
    del sam
    src, edits = workload(size, args.group)
    cfg = ProposerConfig(model_type=args.model, checkpoint=str(ckpt), device=str(dev),
                         pred_iou_thresh=0.0, stability_score_thresh=0.0, encoder_batch_size=4)
    propose_group(src, edits[:1], cfg)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    group = timed(lambda: propose_group(src, edits, cfg), args.repeats)
    indep = timed(lambda: [propose_group(src, [e], cfg) for e in edits], args.repeats)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "cd /work/main && .venv/bin/python benchmarks/bench_regions.py " + " ".join(sys.argv[1:])
    head = [
        f"# Region proposals on GPU: SAM {args.model} (random weights)",
        "",
        f"- date: {now}",
        f"- device: {name} ({dev}), torch {torch.__version__}",
        f"- command: `{cmd.strip()}`",
        f"- image encoder on {size}x{size} inputs (already preprocessed), median of {args.repeats} runs "
        "after a warm-up; peak = torch.cuda.max_memory_allocated",
        "",
        "| dtype | batch | ms per call | image embeddings/s | peak GPU memory (GiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    tail = [
        "",
        f"End to end (load_sam + propose_group, grid points_per_side 16, thresholds 0), "
        f"G={args.group} rollouts at {size}x{size}: group {group[0]:.2f} s, independent "
        f"{indep[0]:.2f} s, ratio **{group[0] / indep[0]:.2f}** (target <= 0.33); "
        f"{args.group / group[0]:.1f} proposals/s grouped; peak {peak:.2f} GiB.",
    ]
    return "\n".join(head + lines + tail) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--naive-samples", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    p.add_argument("--gpu-vitb", action="store_true", help="time vit_b at 1024 px on the GPU")
    p.add_argument("--device", default="cuda", help="device for --gpu-vitb (cpu only for a smoke run)")
    p.add_argument("--gpu-size", type=int, default=1024)
    p.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"],
                   help="model for --gpu-vitb (tiny only for a smoke run)")
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_vitb:
        text = gpu_vitb(args)
        if text is None:
            return 0
        out = args.out or RESULTS / "regions_gpu.md"
    else:
        text = cpu_bench(args)
        out = args.out or RESULTS / "regions.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
