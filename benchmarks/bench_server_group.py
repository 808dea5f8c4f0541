"""Serving at the trainer's batch (issue 14, point 6), two ratios measured in one run.

A. One GRPO group per request through the reward server vs in-process scoring.
   Model: the tiny SFReward model (SFRewardConfig defaults, random weights, seed 0) at
   --image-size; a group of G=16 rollouts of a 256x256 photo with two supplied regions +
   background (bench_server.payload). Three processes: the server (uvicorn, bench_server's
   `--serve` child, max batch G, torch threads --threads), the in-process scorer
   (`sfreward.load(model_dir).score(...)` on the same model, same threads, a loop over the group),
   and this load generator (one keep-alive connection, one group in flight: a trainer waits for
   its rewards). Rounds alternate server / in-process (A, B, A, B, ...) for --rounds rounds of
   --seconds each; reported: groups/s per round, the ratio of medians and of the best rounds.
   Target: server >= 90% of in-process.

B. Region credit vs whole-image credit in a GRPO-like step of a tiny denoiser (diffusers
   UNet2DModel, 4x32x32 latents, G=16): forward, per-token Gaussian log-density of one SDE step,
   loss, backward, optimizer step. Whole: Flow-GRPO's loss on the per-sample mean log-density
   with image advantages. Region: `region_advantages` + `token_coverage` of K=3 masks at
   256x256 (16 px tokens -> 16x16 = 256 tokens; the latent patchified by 2) +
   `region_weighted_loss`. The two arms alternate within one run. Target: region <= 1.05x whole.

Run: .venv/bin/python benchmarks/bench_server_group.py [--rounds 8] [--seconds 4] [--threads 1]
Writes benchmarks/results/server_group.md (or --out).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

G = 16


# --------------------------------------------------------------------------- A: in-process child
def inproc_child(args: argparse.Namespace) -> None:
    """Child: build the same model, then for each '<api> <seconds>' line on stdin score groups in a
    loop and print the groups/s. api 'score': `Scorer.score` (the public batch API, each item
    prepared on its own); 'group': `prepare_group` + `score_prepared` (the source and masks
    prepared once per group, as the server does)."""
    import tempfile

    import torch

    import sfreward
    from bench_server import payload
    from sfreward.inference import ScorerConfig
    from sfreward.model import SFRewardConfig, SFRewardModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d = Path(tempfile.mkdtemp()) / "bench-model"
    SFRewardModel(SFRewardConfig(image_size=args.image_size)).save_pretrained(d)
    scorer = sfreward.load(d, device="cpu", config=ScorerConfig(batch_size=G))
    p = payload(G)
    regs = [p["regions"]] * G
    scorer.score([p["source"]] * G, p["edits"], p["instruction"], regs)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        api, seconds = line.split()[0], float(line.split()[1])
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < float(seconds):
            if api == "score":
                out = scorer.score([p["source"]] * G, p["edits"], p["instruction"], regs)
            else:
                out = scorer.score_prepared(scorer.prepare_group(p["source"], p["edits"], p["instruction"],
                                                                 p["regions"]))
            assert all(o.valid for o in out)
            n += 1
        print(f"{n / (time.perf_counter() - t0):.4f}", flush=True)


async def server_round(url: str, token: str, body: bytes, ctype: str, seconds: float) -> float:
    from bench_server import RawConnection

    request = (f"POST /v1/score_group HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    conn = await RawConnection.open(url, request)
    needle = b'"n_valid":%d' % G
    n, t0 = 0, time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            status, content = await conn.send()
            if status != 200 or needle not in content:
                raise RuntimeError(f"bad response {status}: {content[:200]!r}")
            n += 1
    finally:
        conn.close()
    return n / (time.perf_counter() - t0)


def bench_serving(args: argparse.Namespace) -> dict:
    from bench_server import request_body, start_server

    token = secrets.token_urlsafe(24)
    srv_args = argparse.Namespace(max_wait_ms=0.0, image_size=args.image_size, threads=args.threads)
    proc, url = start_server(G, srv_args, token)
    child = subprocess.Popen([sys.executable, __file__, "--inproc", "--image-size", str(args.image_size),
                              "--threads", str(args.threads)], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        body, ctype = request_body(G, "npy", "multipart")
        asyncio.run(server_round(url, token, body, ctype, 1.0))  # warm-up
        srv, inp, grp = [], [], []
        for r in range(args.rounds):
            srv.append(asyncio.run(server_round(url, token, body, ctype, args.seconds)))
            for api, out in (("score", inp), ("group", grp)):
                child.stdin.write(f"{api} {args.seconds}\n")
                child.stdin.flush()
                out.append(float(child.stdout.readline()))
            print(f"round {r}: server {srv[-1]:.2f}, in-process score() {inp[-1]:.2f}, "
                  f"prepare_group {grp[-1]:.2f} groups/s", flush=True)
    finally:
        child.stdin.close()
        child.wait(timeout=60)
        proc.terminate()
        proc.wait(timeout=60)
    return {"server": srv, "inproc": inp, "group": grp}


# --------------------------------------------------------------------------- B: credit in a step
def bench_credit_step(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from diffusers import UNet2DModel

    from sfreward.credit import flow_grpo_loss, region_advantages, region_weighted_loss, token_coverage

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = UNet2DModel(sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                      down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                      layers_per_block=1, norm_num_groups=8)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    x_t = torch.randn(G, 4, 32, 32)
    t = torch.full((G,), 500)
    sigma, dt_ = 0.7, 0.05
    with torch.no_grad():
        mean_old = x_t - dt_ * net(x_t, t).sample
    x_next = mean_old + sigma * dt_ ** 0.5 * torch.randn_like(x_t)
    H = W = 256
    masks = np.zeros((3, H, W), bool)
    masks[0, 40:140, 60:180] = True
    masks[1, 150:, :] = True
    masks[2] = ~(masks[0] | masks[1])
    masks_t = torch.from_numpy(masks)
    rewards = torch.rand(G, 3, generator=torch.Generator().manual_seed(1))

    def per_token_logp(mean: torch.Tensor) -> torch.Tensor:
        """[G, N]: Gaussian log-density of x_next, averaged over channels and each 2x2 patch."""
        lp = -((x_next - mean) ** 2) / (2 * sigma ** 2 * dt_)               # [G, 4, 32, 32]
        return torch.nn.functional.avg_pool2d(lp.mean(1, keepdim=True), 2).flatten(1)   # [G, 256]

    logp_old = per_token_logp(mean_old)

    def step(region: bool) -> None:
        opt.zero_grad(set_to_none=True)
        logp = per_token_logp(x_t - dt_ * net(x_t, t).sample)
        if region:
            ra = region_advantages(rewards)
            cov = token_coverage(masks_t, token_px=16)                         # [3, 16, 16]
            loss = region_weighted_loss(logp, logp_old, cov, ra.advantages, 0.2, mask=ra.mask)
        else:
            img = rewards.mean(1)
            adv = (img - img.mean()) / (img.std() + 1e-4)
            loss = flow_grpo_loss(logp.mean(1), logp_old.mean(1), adv, 0.2)
        loss.backward()
        opt.step()

    for region in (False, True, False, True):
        step(region)  # warm-up
    whole, reg = [], []
    for _ in range(args.steps):
        for region, out in ((False, whole), (True, reg)):
            t0 = time.perf_counter()
            step(region)
            out.append(time.perf_counter() - t0)
    # The credit work alone (what differs between the modes), on a fixed logp leaf: many cheap
    # repeats give a stable difference even when the whole step's time swings with machine load.
    with torch.no_grad():
        logp_fixed = per_token_logp(x_t - dt_ * net(x_t, t).sample)

    def credit(region: bool) -> None:
        lp = logp_fixed.clone().requires_grad_(True)
        if region:
            ra = region_advantages(rewards)
            cov = token_coverage(masks_t, token_px=16)
            loss = region_weighted_loss(lp, logp_old, cov, ra.advantages, 0.2, mask=ra.mask)
        else:
            img = rewards.mean(1)
            adv = (img - img.mean()) / (img.std() + 1e-4)
            loss = flow_grpo_loss(lp.mean(1), logp_old.mean(1), adv, 0.2)
        loss.backward()

    cw, cr = [], []
    for _ in range(10 * args.steps):
        for region, out in ((False, cw), (True, cr)):
            t0 = time.perf_counter()
            credit(region)
            out.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in net.parameters())
    return {"whole": whole, "region": reg, "n_params": n_params, "credit_whole": cw, "credit_region": cr}


# --------------------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inproc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--image-size", type=int, default=64, help="model input side (tiny model preset)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every process")
    ap.add_argument("--rounds", type=int, default=8, help="server/in-process rounds (each)")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per round")
    ap.add_argument("--steps", type=int, default=30, help="GRPO-like steps per credit mode")
    ap.add_argument("--out", default="server_group.md", help="file name under benchmarks/results/")
    args = ap.parse_args()
    if args.inproc:
        return inproc_child(args)
    import torch

    load_before = os.getloadavg()
    a = bench_serving(args)
    b = bench_credit_step(args)
    load_after = os.getloadavg()
    med = statistics.median
    ratio_med = med(a["server"]) / med(a["inproc"])
    ratio_best = max(a["server"]) / max(a["inproc"])
    per_round = [s / i for s, i in zip(a["server"], a["inproc"])]
    ratio_grp = med(a["server"]) / med(a["group"])
    cr_med = med(b["region"]) / med(b["whole"])
    cr_min = min(b["region"]) / min(b["whole"])
    extra_ms = 1e3 * (med(b["credit_region"]) - med(b["credit_whole"]))
    extra_min_ms = 1e3 * (min(b["credit_region"]) - min(b["credit_whole"]))
    cmd = " ".join(["benchmarks/bench_server_group.py"] + sys.argv[1:])
    lines = [
        "# Serving at the trainer's batch (one group per request) and region-credit cost", "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()}-core CPU VM shared with other engineers' jobs ({platform.machine()}), "
        f"torch {torch.__version__}, {args.threads} intra-op thread(s) per process",
        f"- load average (1, 5, 15 min): before {', '.join(f'{x:.1f}' for x in load_before)}; "
        f"after {', '.join(f'{x:.1f}' for x in load_after)}",
        f"- command: `cd <repo> && PYTHONPATH=. .venv/bin/python {cmd}`", "",
        "## A. One group per request through the server vs in-process scoring", "",
        f"- model: tiny SFReward preset (SFRewardConfig defaults, random weights, seed 0), {args.image_size} px input",
        f"- group: G={G} edits of a 256x256 photo, 2 supplied regions + background, images as .npy in multipart "
        "(RewardClient's default); server: max batch 16, max wait 0 ms, its own process; load generator: "
        "one keep-alive connection, one group in flight, its own process; in-process: "
        "`sfreward.load(dir).score(...)` on the same model in its own process",
        f"- {args.rounds} rounds of {args.seconds:.0f} s each, interleaved server / in-process", "",
        "| round | server (groups/s) | in-process `score()` | ratio | in-process `prepare_group` + `score_prepared` |",
        "|---:|---:|---:|---:|---:|"]
    lines += [f"| {i} | {s:.2f} | {p:.2f} | {r:.2f} | {g:.2f} |"
              for i, (s, p, r, g) in enumerate(zip(a["server"], a["inproc"], per_round, a["group"]))]
    lines += ["", f"Server / in-process: **{ratio_med:.2f}** (medians), {ratio_best:.2f} (best rounds), "
                  f"median of per-round ratios {med(per_round):.2f}. Target >= 0.90: "
                  f"{'met' if ratio_med >= 0.9 else 'NOT met'} (medians). Against the in-process group API "
                  f"(source and masks prepared once per group, as the server does): **{ratio_grp:.2f}** (medians).", "",
              "## B. Region credit vs whole-image credit in a GRPO-like step", "",
              f"- denoiser: diffusers UNet2DModel, 4x32x32 latents, blocks (32, 64), {b['n_params']:,} parameters; "
              f"G={G}; step = forward + per-token log-density + loss + backward + AdamW",
              "- region: region_advantages [16, 3] + token_coverage [3, 256, 256] -> [3, 16, 16] + "
              "region_weighted_loss; whole: Flow-GRPO loss on the per-sample mean",
              f"- {args.steps} steps per mode, alternating whole / region", "",
              "| mode | median (ms) | min (ms) |", "|---|---:|---:|",
              f"| whole | {1e3 * med(b['whole']):.1f} | {1e3 * min(b['whole']):.1f} |",
              f"| region | {1e3 * med(b['region']):.1f} | {1e3 * min(b['region']):.1f} |", "",
              f"Region / whole step time: **{cr_med:.3f}** (medians), {cr_min:.3f} (minima). Target <= 1.05: "
              f"{'met' if cr_med <= 1.05 else 'NOT met'} (medians).", "",
              f"The credit work alone ({10 * args.steps} repeats per mode, interleaved, on a fixed log-density): "
              f"whole {1e3 * med(b['credit_whole']):.2f} ms, region {1e3 * med(b['credit_region']):.2f} ms (medians); "
              f"region adds {extra_ms:.2f} ms (medians; {extra_min_ms:.2f} ms between minima) = "
              f"**{100 * extra_ms / (1e3 * med(b['whole'])):.2f}%** of the median whole-image step "
              f"({100 * extra_min_ms / (1e3 * min(b['whole'])):.2f}% of the fastest step). The whole-step ratio above "
              "carries the machine's load swings; this difference does not.", ""]
    out = ROOT / "benchmarks" / "results" / args.out
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
