"""Benchmark the reward server: dynamic batching vs unbatched (max batch 1), on CPU.

Workload: a tiny SFReward model (random weights, seeded; SFRewardConfig defaults at
--image-size), requests of --group rollouts of a 256x256 real photo (skimage) with two supplied
regions + background, images encoded as --format (npy: the client's default; png) and sent as
--transport (multipart raw file parts: the client's default; json with base64). For each server
mode the server runs in its own subprocess (uvicorn, so the load generator does not share its
GIL); the load generator keeps `concurrency` requests in flight (asyncio, raw keep-alive
connections) for --seconds after a warm-up and records each request's latency. Both modes run in the same invocation, interleaved per concurrency.
Every response is checked: HTTP 200 and all rollouts valid.

Run: .venv/bin/python benchmarks/bench_server.py [--seconds 8] [--group 2] [--threads 1]
Writes benchmarks/results/server.md.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
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
    from sfreward.server.protocol import uvicorn_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SFRewardModel(SFRewardConfig(image_size=args.image_size)).eval()
    scorer = Scorer(model, f"bench-tiny-{args.image_size}", "cpu", config=ScorerConfig(batch_size=args.max_batch))
    cfg = ServerConfig(token=os.environ["SFR_SERVER_TOKEN"], max_group_size=16,
                       batch=BatcherConfig(max_batch_size=args.max_batch, max_wait_ms=args.max_wait_ms,
                                           max_queue=1024))
    # The protocol and logging `sfr serve` runs with (request-head timeout, log redaction).
    uvicorn.Server(uvicorn_config(create_app(scorer, cfg), cfg.head_timeout_s, host="127.0.0.1", port=args.port,
                                  log_level="warning", access_log=False)).run()


def request_body(group: int, fmt: str, transport: str) -> tuple[bytes, str]:
    """(body, content type) of one request as `RewardClient` sends it, built once: the load
    generator shares the cores with the server."""
    import httpx

    from sfreward.client import encode_image, score_group_request

    p = payload(group)
    kwargs = score_group_request(p["source"], p["edits"], p["instruction"], p["regions"], transport=transport,
                                 encode=lambda a: encode_image(a, fmt))
    req = httpx.Request("POST", "http://x/v1/score_group", **kwargs)
    return req.read(), req.headers["content-type"]


def payload(group: int) -> dict:
    """A 256x256 photo, `group` edits of it (uint8 arrays) and two regions (COCO RLE)."""
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
    m1 = np.zeros((256, 256), bool)
    m1[40:120, 60:160] = True
    m2 = np.zeros((256, 256), bool)
    m2[150:, :] = True
    return {"instruction": "paint the cat's head green", "source": src, "edits": edits,
            "regions": [{"kind": "edit", "mask": masks.encode(m1)}, {"kind": "context", "mask": masks.encode(m2)}]}


class RawConnection:
    """One keep-alive HTTP/1.1 connection sending a pre-built request: the load generator shares
    the 2 cores with the server, and httpx's per-request work (~3.5 ms of CPU for a 600 kB
    body) capped the transport alone at ~160 req/s here, below what the server can do."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes):
        self.reader, self.writer, self.request = reader, writer, request

    @classmethod
    async def open(cls, url: str, request: bytes) -> "RawConnection":
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
        return cls(reader, writer, request)

    async def send(self) -> tuple[int, bytes]:
        self.writer.write(self.request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(url: str, token: str, body: bytes, ctype: str, concurrency: int, seconds: float,
               group: int) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    # The request is serialized once; each of `concurrency` connections sends it in a loop.
    request = (f"POST /v1/score_group HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    conns = [await RawConnection.open(url, request) for _ in range(concurrency)]
    needle = b'"n_valid":%d' % group

    async def one(conn: RawConnection) -> None:
        nonlocal errors
        t = time.perf_counter()
        status, content = await conn.send()
        if status == 200 and needle in content:  # every rollout of the group scored
            lat.append(time.perf_counter() - t)
        else:
            errors += 1

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        try:
            await asyncio.gather(*[one(c) for c in conns])  # warm-up
            lat.clear()
            h0 = (await client.get("/health")).json()
            stop = time.perf_counter() + seconds
            start = time.perf_counter()

            async def worker(conn: RawConnection) -> None:
                while time.perf_counter() < stop:
                    await one(conn)

            await asyncio.gather(*[worker(c) for c in conns])
            elapsed = time.perf_counter() - start
            h1 = (await client.get("/health")).json()
        finally:
            for c in conns:
                c.close()
    calls = h1["model_calls"] - h0["model_calls"]
    items = h1["items_scored"] - h0["items_scored"]
    lat.sort()
    return {"n": len(lat), "errors": errors, "rps": len(lat) / elapsed,
            "p50": 1000 * statistics.median(lat), "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "mean_batch": items / max(1, calls)}


def parse_body(body: bytes, ctype: str, cfg, loop: asyncio.AbstractEventLoop):
    """The server's own request parsing (JSON or multipart) on a body, outside HTTP."""
    from starlette.requests import Request

    from sfreward.server.payload import parse_request

    async def go():
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/score_group", "query_string": b"",
                 "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]}
        return await parse_request(Request(scope, receive), cfg.max_group_size)

    return loop.run_until_complete(go())


def breakdown(body: bytes, ctype: str, args: argparse.Namespace) -> dict:
    """In-process cost per request of the server's stages (median ms), same model and payload:
    where the time goes, and the best batched/unbatched ratio those costs allow (Amdahl)."""
    import torch

    from sfreward.inference import Scorer, ScorerConfig
    from sfreward.model import SFRewardConfig, SFRewardModel
    from sfreward.server.app import ServerConfig, _prepare, _response

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SFRewardModel(SFRewardConfig(image_size=args.image_size)).eval()
    scorer = Scorer(model, "bench", "cpu", config=ScorerConfig(batch_size=args.max_batch))
    cfg = ServerConfig(token="x" * 16, max_group_size=16)

    def med(fn, n=15):
        fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t)
        return 1000 * statistics.median(ts), out

    loop = asyncio.new_event_loop()
    t_parse, (req, src, edits) = med(lambda: parse_body(body, ctype, cfg, loop))
    loop.close()
    t_prep, (prep, regions, rsrc) = med(lambda: _prepare(scorer, cfg, req, src, edits))
    one = prep[:1]
    t_m1, res = med(lambda: scorer.score_prepared(one), n=31)
    full = (prep * args.max_batch)[:args.max_batch]
    t_mb, _ = med(lambda: scorer.score_prepared(full), n=9)
    torch.set_num_threads(2)
    t_mb2, _ = med(lambda: scorer.score_prepared(full), n=9)
    torch.set_num_threads(args.threads)
    res = scorer.score_prepared(prep)
    t_resp, _ = med(lambda: json.dumps(_response(res, regions, rsrc, req, "bench")))
    per_item_b = t_mb / args.max_batch
    return {"parse": t_parse, "prepare": t_prep, "response": t_resp, "model_b1": t_m1,
            "model_per_item_batched": per_item_b,
            "model_per_item_batched_2t": t_mb2 / args.max_batch}


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
    ap.add_argument("--format", default="npy", choices=["npy", "png"], help="how images travel")
    ap.add_argument("--transport", default="multipart", choices=["multipart", "json"],
                    help="multipart: raw image file parts (the client's default); json: base64 in JSON")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per configuration")
    args = ap.parse_args()
    if args.serve:
        return serve(args)

    token = secrets.token_urlsafe(24)
    body, ctype = request_body(args.group, args.format, args.transport)
    servers = {"unbatched": start_server(1, args, token), "batched": start_server(args.max_batch, args, token)}
    results: dict[tuple[str, int], dict] = {}
    try:
        for c in CONCURRENCY:
            for mode in ("unbatched", "batched"):
                r = asyncio.run(load(servers[mode][1], token, body, ctype, c, args.seconds, args.group))
                results[(mode, c)] = r
                print(f"{mode:9s} c={c:2d}: {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms"
                      f"  mean batch {r['mean_batch']:.1f}  errors {r['errors']}", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)

    bd = breakdown(body, ctype, args)
    print({k: round(v, 2) for k, v in bd.items()}, flush=True)
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
        f"--group {args.group} --format {args.format} --transport {args.transport} --image-size {args.image_size} --max-batch {args.max_batch} "
        f"--max-wait-ms {args.max_wait_ms:g} --threads {args.threads}`",
        f"- workload: tiny SFReward model (random weights, {args.image_size}px input), requests of "
        f"{args.group} rollouts of a 256x256 photo (skimage chelsea) with 2 supplied regions + background, "
        f"images as {args.format} sent as {args.transport} ({'raw file parts' if args.transport == 'multipart' else 'base64 in JSON'}); server in its own process (uvicorn), asyncio load generator (raw keep-alive HTTP/1.1 connections, request pre-built) keeping `c` requests "
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
    lines += [
        "", "Where a request's server time goes (in-process, same model and payload, median ms, "
        "measured after the load runs):", "",
        "| stage | ms |", "|---|---:|",
        f"| parse the {args.transport} body ({args.group} rollouts + source) | {bd['parse']:.1f} |",
        f"| prepare (decode, regions, resize to the model) | {bd['prepare']:.1f} |",
        f"| response (credit advantages, JSON) | {bd['response']:.1f} |",
        f"| model call, 1 rollout | {bd['model_b1']:.1f} |",
        f"| model, per rollout in a batch of {args.max_batch} | {bd['model_per_item_batched']:.1f} |",
        f"| model, per rollout in a batch of {args.max_batch}, 2 intra-op threads | {bd['model_per_item_batched_2t']:.1f} |",
        "", f"Reading: batching cuts the model's cost per rollout from {bd['model_b1']:.1f} ms (one rollout per "
        f"call) to {bd['model_per_item_batched']:.1f} ms in a full batch ({bd['model_per_item_batched_2t']:.1f} ms "
        f"with 2 threads): a {bd['model_b1'] / bd['model_per_item_batched']:.1f}x gain in isolation "
        f"({bd['model_b1'] / bd['model_per_item_batched_2t']:.1f}x). The work outside the model "
        f"({bd['parse'] + bd['prepare'] + bd['response']:.1f} ms per request in-process, plus HTTP) is the same in "
        "both modes, and the batched server spends most of its time there. In the running server the unbatched "
        "mode also loses time to the GIL (its model thread makes a few hundred torch calls per rollout, each "
        "taking the GIL back from the request threads), which is why the measured ratio can exceed the "
        "isolated model gain. A 3x server-level gain needs a model whose per-call cost dwarfs its per-rollout "
        "cost: a GPU (one call of 32 costs little more than one call of 1); this run had none."]
    lines += ["", f"Target: batched >= 3x unbatched req/s at concurrency 32 -> "
                  f"{ratio:.2f}x, {'met' if ratio >= 3 else 'NOT met'}.", ""]
    out = ROOT / "benchmarks" / "results" / "server.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out} (ratio at c=32: {ratio:.2f}x)")


if __name__ == "__main__":
    main()
