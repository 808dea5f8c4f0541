"""Benchmark the reward server: dynamic batching vs unbatched (max batch 1), on CPU.

Workload: a tiny SFReward model (random weights, seeded; SFRewardConfig defaults at
--image-size), requests of --group rollouts of a 256x256 real photo (skimage) with two supplied
regions + background, images sent as base64 PNG. For each server mode the server runs in its own
subprocess (uvicorn, so the load generator does not share its GIL); the load generator keeps
`concurrency` requests in flight (asyncio + httpx) for --seconds after a warm-up and records
each request's latency. Both modes run in the same invocation, interleaved per concurrency.
Every response is checked: HTTP 200 and all rollouts valid.

Run: .venv/bin/python benchmarks/bench_server.py [--seconds 8] [--group 2] [--threads 1]
Writes benchmarks/results/server.md.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import io
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONCURRENCY = (1, 8, 32)


def serve(args: argparse.Namespace) -> None:
    """Child process: build the model and run the server until killed."""
    import torch
    import uvicorn

    from sfreward.inference import Scorer, ScorerConfig
    from sfreward.model import SFRewardConfig, SFRewardModel
    from sfreward.server.app import ServerConfig, create_app
    from sfreward.server.batcher import BatcherConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SFRewardModel(SFRewardConfig(image_size=args.image_size)).eval()
    scorer = Scorer(model, f"bench-tiny-{args.image_size}", "cpu", config=ScorerConfig(batch_size=args.max_batch))
    cfg = ServerConfig(token=os.environ["SFR_SERVER_TOKEN"], max_group_size=16,
                       batch=BatcherConfig(max_batch_size=args.max_batch, max_wait_ms=args.max_wait_ms,
                                           max_queue=1024))
    uvicorn.run(create_app(scorer, cfg), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


def payload(group: int) -> dict:
    import numpy as np
    from PIL import Image
    from skimage import data

    from warehouse import masks

    src = np.asarray(Image.fromarray(data.chelsea()).resize((256, 256)))
    edits = []
    for k in range(group):
        e = src.copy()
        e[40 + 8 * k: 120, 60: 160] = (30 * k % 255, 200, 90)
        edits.append(e)

    def b64(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG", compress_level=1)
        return base64.b64encode(buf.getvalue()).decode()

    m1 = np.zeros((256, 256), bool)
    m1[40:120, 60:160] = True
    m2 = np.zeros((256, 256), bool)
    m2[150:, :] = True
    return {"instruction": "paint the cat's head green", "source": b64(src), "edits": [b64(e) for e in edits],
            "regions": [{"kind": "edit", "mask": masks.encode(m1)}, {"kind": "context", "mask": masks.encode(m2)}]}


async def load(url: str, token: str, body: dict, concurrency: int, seconds: float, group: int) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as client:
        async def one() -> None:
            nonlocal errors
            t = time.perf_counter()
            r = await client.post("/v1/score_group", json=body)
            ok = r.status_code == 200 and r.json()["n_valid"] == group
            if ok:
                lat.append(time.perf_counter() - t)
            else:
                errors += 1

        await asyncio.gather(*[one() for _ in range(concurrency)])  # warm-up
        lat.clear()
        h0 = (await client.get("/health")).json()
        stop = time.perf_counter() + seconds
        start = time.perf_counter()

        async def worker() -> None:
            while time.perf_counter() < stop:
                await one()

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - start
        h1 = (await client.get("/health")).json()
    calls = h1["model_calls"] - h0["model_calls"]
    items = h1["items_scored"] - h0["items_scored"]
    lat.sort()
    return {"n": len(lat), "errors": errors, "rps": len(lat) / elapsed,
            "p50": 1000 * statistics.median(lat), "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "mean_batch": items / max(1, calls)}


def start_server(max_batch: int, args: argparse.Namespace, token: str) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--max-batch", str(max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--image-size", str(args.image_size),
           "--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "SFR_SERVER_TOKEN": token})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("benchmark server did not start")
        time.sleep(0.3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the server")
    ap.add_argument("--group", type=int, default=2, help="rollouts per request")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per configuration")
    args = ap.parse_args()
    if args.serve:
        return serve(args)

    token = secrets.token_urlsafe(24)
    body = payload(args.group)
    servers = {"unbatched": start_server(1, args, token), "batched": start_server(args.max_batch, args, token)}
    results: dict[tuple[str, int], dict] = {}
    try:
        for c in CONCURRENCY:
            for mode in ("unbatched", "batched"):
                r = asyncio.run(load(servers[mode][1], token, body, c, args.seconds, args.group))
                results[(mode, c)] = r
                print(f"{mode:9s} c={c:2d}: {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms"
                      f"  mean batch {r['mean_batch']:.1f}  errors {r['errors']}", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)

    ratio = results[("batched", 32)]["rps"] / results[("unbatched", 32)]["rps"]
    import torch

    lines = [
        "# Reward server: dynamic batching vs unbatched",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: 2-core CPU VM shared with other jobs ({platform.machine()}), torch {torch.__version__}, "
        f"{args.threads} intra-op thread(s) in the server; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        f"- command: `cd /work/main && .venv/bin/python benchmarks/bench_server.py --seconds {args.seconds:g} "
        f"--group {args.group} --image-size {args.image_size} --max-batch {args.max_batch} "
        f"--max-wait-ms {args.max_wait_ms:g} --threads {args.threads}`",
        f"- workload: tiny SFReward model (random weights, {args.image_size}px input), requests of "
        f"{args.group} rollouts of a 256x256 photo (skimage chelsea) with 2 supplied regions + background, "
        "base64 PNG; server in its own process (uvicorn), asyncio+httpx load generator keeping `c` requests "
        f"in flight for {args.seconds:g} s after a warm-up; every response checked (200, all rollouts valid)",
        f"- modes: batched = max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms; unbatched = max batch 1 "
        "(same server code, one item per model call)",
        "",
        "| concurrency | mode | req/s | p50 (ms) | p99 (ms) | mean items per model call | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in CONCURRENCY:
        for mode in ("unbatched", "batched"):
            r = results[(mode, c)]
            lines.append(f"| {c} | {mode} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                         f"{r['mean_batch']:.1f} | {r['errors']} |")
    lines += ["", "| concurrency | batched / unbatched req/s |", "|---:|---:|"]
    for c in CONCURRENCY:
        lines.append(f"| {c} | {results[('batched', c)]['rps'] / results[('unbatched', c)]['rps']:.2f}x |")
    lines += ["", f"Target: batched >= 3x unbatched req/s at concurrency 32 -> "
                  f"{ratio:.2f}x, {'met' if ratio >= 3 else 'NOT met'}.", ""]
    out = ROOT / "benchmarks" / "results" / "server.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out} (ratio at c=32: {ratio:.2f}x)")


if __name__ == "__main__":
    main()
