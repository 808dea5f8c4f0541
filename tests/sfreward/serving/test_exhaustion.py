"""Resource exhaustion against a real reward server (issue 18): sockets that never finish their
request head, and many requests whose images decode to far more than they weigh."""
from __future__ import annotations

import base64
import os
import select
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from sfreward.server.app import BackgroundServer, ServerConfig, create_app
from tests.fixtures.serving import png

REPO = Path(__file__).resolve().parents[3]


def _closed_by_peer(s: socket.socket, wait_s: float) -> bool:
    """Whether the server closed `s` within wait_s (EOF or reset), without sending it anything."""
    r, _, _ = select.select([s], [], [], wait_s)
    if not r:
        return False
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_partial_request_heads_are_closed_and_the_server_recovers(tiny_scorer, server_token):
    app = create_app(tiny_scorer, ServerConfig(token=server_token, head_timeout_s=1.0))
    with BackgroundServer(app, head_timeout_s=1.0, limit_concurrency=256) as srv:
        addr = (srv.host, srv.port)
        slow = [socket.create_connection(addr) for _ in range(270)]   # more than limit_concurrency
        try:
            for s in slow:
                s.sendall(b"POST /v1/score_group HT")                   # a partial request line
            # One more sends a byte every 0.1 s: each byte used to restart uvicorn's only timer.
            trickle = socket.create_connection(addr)
            head = b"GET /health HTTP/1.1\r\nX-Pad: " + b"a" * 1000
            for i in range(len(head)):                                 # at most ~100 s; closed after ~1 s
                trickle.sendall(head[i:i + 1])
                if _closed_by_peer(trickle, 0.1):
                    break
            else:
                pytest.fail("a connection trickling its request head was never closed")
            # Every partial head is closed (bounded wait per socket; they all timed out by now).
            still_open = [k for k, s in enumerate(slow) if not _closed_by_peer(s, 30)]
            assert still_open == [], f"{len(still_open)} of 270 slow sockets still open"
        finally:
            for s in slow:
                s.close()
        # The server answers normal requests again.
        assert httpx.get(srv.url + "/health", timeout=30).status_code == 200
        # A keep-alive connection gets the same bound for its next request's head.
        with socket.create_connection(addr) as ka:
            ka.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            ka.settimeout(30)
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = ka.recv(65536)
                assert chunk, f"connection closed before the whole response: {reply!r}"
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200")
            ka.sendall(b"GET /hea")
            assert _closed_by_peer(ka, 30)


# --------------------------------------------------------------------------- decode budget
_SERVER = """
import os, sys
import uvicorn
import sfreward
from sfreward.inference import ScorerConfig
from sfreward.server.app import ServerConfig, create_app
from sfreward.server.protocol import uvicorn_config

model_dir, port, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
scorer = sfreward.load(model_dir, device="cpu", config=ScorerConfig(batch_size=8))
cfg = ServerConfig(token=os.environ["SFR_SERVER_TOKEN"], propose_regions=False, decode_budget_bytes=budget,
                   max_request_bytes=8 << 20)
uvicorn.Server(uvicorn_config(create_app(scorer, cfg), host="127.0.0.1", port=port, log_level="warning",
                              limit_concurrency=512)).run()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vm(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith(key + ":"))


@pytest.mark.slow  # a server subprocess (torch import) and 128 requests of 9 images of 9 MP
def test_peak_rss_stays_within_the_decode_budget(tiny_model_dir, server_token):
    budget = 768 << 20
    port = _free_port()
    env = {**os.environ, "SFR_SERVER_TOKEN": server_token, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(tiny_model_dir), str(port), str(budget)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):                                   # up to ~120 s to start
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        else:
            pytest.fail("server did not start")
        # 3000x3000 images that compress to ~30 kB each: a 0.4 MB request decodes to ~250 MB.
        img = np.zeros((3000, 3000, 3), np.uint8)
        img[::97, ::89] = 255
        data = base64.b64encode(png(img)).decode()
        body = {"instruction": "brighten the dots", "source": data, "edits": [data] * 8}
        headers = {"Authorization": f"Bearer {server_token}"}
        server = psutil.Process(proc.pid)
        baseline = server.memory_info().rss                    # idle, model loaded
        with open(f"/proc/{proc.pid}/clear_refs", "w") as f:   # reset the kernel's peak (VmHWM)
            f.write("5")

        def one(_: int) -> int:
            with httpx.Client(timeout=300) as c:
                return c.post(url + "/v1/score_group", json=body, headers=headers).status_code

        with ThreadPoolExecutor(128) as pool:
            codes = list(pool.map(one, range(128)))
        peak = _vm(proc.pid, "VmHWM")
        assert set(codes) <= {200, 503} and codes.count(200) >= 1, codes
        assert httpx.get(url + "/health", timeout=10).json()["decode_budget_in_use"] == 0
        print(f"baseline {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB, "
              f"{codes.count(200)} admitted, {codes.count(503)} refused")
        assert peak - baseline <= budget, (peak - baseline) / 2**20
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert server_token not in out
