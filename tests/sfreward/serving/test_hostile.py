"""Hostile requests to the reward server (issue 18): forged mask sizes, too many regions, the
decode budget, settings out of range, deep JSON, client disconnects, credentials in query
strings and text bounds. The server is real (uvicorn on 127.0.0.1, the tiny model)."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main
from sfreward.inputs import InvalidInput, normalize_regions
from sfreward.server.admission import DecodeBudget, request_cost
from sfreward.server.app import BackgroundServer, ServerConfig, create_app
from sfreward.server.batcher import BatcherConfig, SettingError
from tests.fixtures.serving import box_regions, edits_of, photo, png
from warehouse import masks

FORGED = {"size": [30000, 30000], "counts": ""}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body_of(src: np.ndarray, edits: list, **kw) -> dict:
    return {"instruction": "recolour the box", "source": b64(png(src)),
            "edits": [b64(png(e)) for e in edits], **kw}


def post(srv, body, token, **kw) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/score_group", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}, **kw)


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith(key + ":"))


@contextlib.contextmanager
def peak_rss_growth():
    """Bytes the process's peak RSS (VmHWM) grew inside the block; the kernel's own counter,
    reset by writing 5 to clear_refs (exact, no sampling)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _vm("VmRSS")
    out = {}
    yield out
    out["growth"] = _vm("VmHWM") - base
    print(f"peak RSS growth {out['growth'] / 2**20:.0f} MiB")


# --------------------------------------------------------------------------- item 3: memory
def test_forged_rle_size_is_refused_before_allocating():
    with pytest.raises(masks.MaskError, match=r"declares 30000x30000 \(WxH\) but its image is 64x48"):
        masks.decode(FORGED, expected_size=(48, 64))
    with pytest.raises(masks.MaskError, match="900,000,000 pixels, over the limit of 40,000,000"):
        masks.decode(FORGED)   # a caller that does not know the image is still bounded
    with peak_rss_growth() as m:
        with pytest.raises(InvalidInput, match="region 0: mask RLE declares 30000x30000"):
            normalize_regions([{"kind": "edit", "mask": FORGED}], 64, 64)
    assert m["growth"] < 64 << 20    # decoding it first cost 1.7 GB


def test_sfr_score_with_a_forged_rle_fails_fast(tmp_path, tiny_model_dir, capsys):
    src = photo("astronaut", 64)
    Image.fromarray(src).save(tmp_path / "src.png")
    Image.fromarray(edits_of(src, 1)[0]).save(tmp_path / "ed.png")
    (tmp_path / "regions.json").write_text(json.dumps([{"kind": "edit", "mask": FORGED}]))   # 70 bytes
    with peak_rss_growth() as m:
        rc = main(["score", "--source", str(tmp_path / "src.png"), "--edited", str(tmp_path / "ed.png"),
                   "--instruction", "x", "--regions", str(tmp_path / "regions.json"),
                   "--model", str(tiny_model_dir), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "region 0: mask RLE declares 30000x30000 (WxH) but its image is 64x64" in err
    assert "Traceback" not in err
    assert m["growth"] < 256 << 20   # was 4.2 GB


def test_regions_per_item_are_capped(start_server, server_token):
    many = [{"kind": "edit", "bbox": [i, 0, i + 2, 2]} for i in range(33)]
    with pytest.raises(InvalidInput, match="33 regions; at most 32 per item"):
        normalize_regions(many, 64, 64)
    srv = start_server(max_regions=4)
    src = photo("astronaut", 64)
    r = post(srv, body_of(src, edits_of(src, 1), regions=many[:5]), server_token)
    assert r.status_code == 422 and "5 regions; at most 4 per group" in r.json()["error"]["message"]
    assert post(srv, body_of(src, edits_of(src, 1), regions=many[:4]), server_token).status_code == 200


def test_decode_budget_admits_while_it_fits():
    b = DecodeBudget(100)
    assert b.try_acquire(60) and b.in_use == 60
    assert not b.try_acquire(41) and b.in_use == 60     # refused: nothing charged
    assert b.try_acquire(40) and b.in_use == 100
    assert not b.try_acquire(1)
    b.release(60)
    assert b.try_acquire(0) and b.try_acquire(60) and b.in_use == 100
    assert b.fits_at_all(100) and not b.fits_at_all(101)
    with pytest.raises(ValueError, match="releasing 101 bytes but only 100"):
        b.release(101)
    with pytest.raises(ValueError):
        DecodeBudget(0)


def test_request_cost_comes_from_the_headers():
    big = png(np.zeros((3000, 2000, 3), np.uint8))           # 6 MP, a few kB
    small = png(photo("astronaut", 64))
    npy = io.BytesIO()
    np.save(npy, np.zeros((100, 50, 3), np.uint8))
    px = 6_000_000
    assert request_cost(big, [big, big], n_regions=2) == 3 * 3 * px + 20 * px + 6 * 2 * px + 2 * 3 * len(big)
    assert request_cost(small, [npy.getvalue(), b"junk"], n_regions=1) == \
        3 * (4096 + 5000) + 20 * 5000 + 6 * 4096 + 2 * (len(small) + len(npy.getvalue()) + 4)


def test_full_decode_budget_gives_503_and_an_impossible_request_413(start_server, server_token):
    src = photo("astronaut", 64)
    body = body_of(src, edits_of(src, 2))
    srv = start_server(decode_budget_bytes=8 << 20, propose_regions=False)
    budget = srv.app.state.budget
    assert budget.try_acquire(budget.capacity - 1000)         # another request holds the budget
    r = post(srv, body, server_token)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "decode budget is in use" in r.json()["error"]["message"]
    budget.release(budget.capacity - 1000)
    assert post(srv, body, server_token).status_code == 200
    assert budget.in_use == 0                                  # released after each request
    huge = png(np.zeros((2000, 2000, 3), np.uint8))           # 4 MP: ~100 MiB decoded with 2 edits
    r = post(srv, {"instruction": "x", "source": b64(huge), "edits": [b64(huge)] * 2}, server_token)
    assert r.status_code == 413 and "over the server's decode budget of 8 MiB" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- item 9: settings
@pytest.mark.parametrize("kw, needle", [
    ({"batch": {"max_batch_size": 0}}, "max_batch_size: must be an integer >= 1, got 0"),
    ({"batch": {"max_batch_size": -3}}, "max_batch_size: must be an integer >= 1, got -3"),
    ({"batch": {"max_wait_ms": float("nan")}}, "max_wait_ms: must be a finite number >= 0.0"),
    ({"batch": {"max_queue": 0}}, "max_queue: must be an integer >= 1"),
    ({"max_group_size": 0}, "max_group_size: must be an integer >= 1, got 0"),
    ({"max_group_size": 300}, "max_group_size: 300 must not exceed the batch queue (max_queue 256)"),
    ({"max_regions": 0}, "max_regions: must be an integer >= 1"),
    ({"decode_budget_bytes": -1}, "decode_budget_bytes: must be an integer >= 1"),
    ({"head_timeout_s": 0}, "head_timeout_s: must be a finite number > 0.0"),
    ({"max_inflight_requests": True}, "max_inflight_requests: must be an integer >= 1, got True"),
])
def test_server_settings_are_validated(kw, needle):
    batch = kw.pop("batch", None)
    with pytest.raises(SettingError) as e:
        ServerConfig(token="a-token-of-some-length", batch=BatcherConfig(**(batch or {})), **kw)
    assert needle in str(e.value)


@pytest.mark.parametrize("argv, needle", [
    (["--max-batch", "0"], "--max-batch: must be an integer >= 1, got 0"),
    (["--max-batch", "-1"], "--max-batch: must be an integer >= 1, got -1"),
    (["--max-group", "0"], "--max-group: must be an integer >= 1, got 0"),
    (["--max-group", "1000"], "--max-group: 1000 must not exceed the batch queue (max_queue 256)"),
    (["--max-wait-ms", "-5"], "--max-wait-ms: must be a finite number >= 0.0, got -5.0"),
    (["--max-queue", "0"], "--max-queue: must be an integer >= 1"),
    (["--max-request-mb", "0"], "--max-request-mb: must be a positive number of MiB, got 0.0"),
    (["--decode-budget-mb", "nan"], "--decode-budget-mb: must be a positive number of MiB, got nan"),
    (["--head-timeout", "0"], "--head-timeout: must be a finite number > 0.0, got 0.0"),
    (["--max-regions", "-2"], "--max-regions: must be an integer >= 1, got -2"),
    (["--chunk", "0"], "--chunk: must be an integer >= 1, got 0"),
    (["--capture-rate", "1.5"], "--capture-rate: must be between 0 and 1, got 1.5"),
    (["--port", "70000"], "--port: must be 0..65535, got 70000"),
])
def test_sfr_serve_refuses_bad_settings_in_one_line(argv, needle, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SFR_SERVER_TOKEN", "a-long-enough-secret-token")
    # The model path does not exist: settings are checked before anything is loaded or bound.
    assert main(["serve", "--model", str(tmp_path / "no-model"), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- item 10: 400 not 500
@contextlib.contextmanager
def captured(*names: str):
    """Records of the named loggers (the server runs in this process, on another thread)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    h = Keep(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(h)
        lg.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for lg, lvl in zip(loggers, old):
            lg.removeHandler(h)
            lg.setLevel(lvl)


def test_deep_json_is_400(shared_server, server_token):
    deep = b'{"instruction": "x", "source": "AAAA", "edits": ["AAAA"], "metadata": ' + b"[" * 100_000 + \
        b"]" * 100_000 + b"}"
    r = httpx.post(f"{shared_server.url}/v1/score_group", content=deep, timeout=60,
                   headers={"Authorization": f"Bearer {server_token}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "body is nested too deeply to parse"
    files = [("source", ("s.png", png(photo("astronaut", 64)), "image/png")),
             ("edits", ("e.png", png(photo("astronaut", 64)), "image/png"))]
    r = httpx.post(f"{shared_server.url}/v1/score_group", files=files, timeout=60,
                   data={"instruction": "x", "regions": "[" * 100_000 + "]" * 100_000},
                   headers={"Authorization": f"Bearer {server_token}"})
    assert r.status_code == 400 and "field `regions` is nested too deeply" in r.json()["error"]["message"]


def test_client_disconnect_is_not_an_internal_error(shared_server, server_token):
    with captured("sfreward.server.app", "uvicorn.error", "uvicorn") as records:
        with socket.create_connection((shared_server.host, shared_server.port)) as s:
            s.sendall(b"POST /v1/score_group HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + server_token.encode() + b"\r\nContent-Length: 100000\r\n\r\n"
                      + b'{"instruction": "x", ')
            time.sleep(0.2)   # the request reaches the endpoint; then the client goes away
        deadline = time.monotonic() + 30
        while not any("disconnected" in r.getMessage() for r in records) and time.monotonic() < deadline:
            time.sleep(0.05)
    msgs = [r.getMessage() for r in records]
    assert any("client disconnected before its request" in m for m in msgs), msgs
    assert not [m for m in msgs if "internal error" in m or "Exception in ASGI" in m], msgs
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR]


# --------------------------------------------------------------------------- item 11: access log
def test_query_string_credentials_are_redacted_in_the_access_log(tiny_scorer, server_token):
    from uvicorn.logging import AccessFormatter

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False))
    app = create_app(tiny_scorer, ServerConfig(token=server_token, propose_regions=False))
    with BackgroundServer(app, access_log=True, log_level="info") as srv:
        access = logging.getLogger("uvicorn.access")
        access.addHandler(handler)
        try:
            for q in (f"token={server_token}", f"api_key={server_token}&x=1", f"a=1&ACCESS_TOKEN={server_token}"):
                r = httpx.post(f"{srv.url}/v1/score_group?{q}", json={}, timeout=30)
                assert r.status_code == 401
            httpx.get(f"{srv.url}/health?verbose=1", timeout=30)
        finally:
            access.removeHandler(handler)
    log = buf.getvalue()
    assert server_token not in log
    assert "/v1/score_group?token=[REDACTED] HTTP/1.1\" 401" in log
    assert "?api_key=[REDACTED]&x=1" in log and "?a=1&ACCESS_TOKEN=[REDACTED]" in log
    assert "/health?verbose=1" in log     # other parameters stay readable


# --------------------------------------------------------------------------- item 12: text bounds
@pytest.mark.parametrize("change, needle", [
    ({"instruction": "   "}, "instruction: Value error, must not be blank"),
    ({"instruction": "x" * 2001}, "instruction: String should have at most 2000 characters"),
    ({"instruction": "make it red\x00"}, "instruction: Value error, must not contain NUL"),
    ({"group_id": "g" * 129}, "group_id: String should have at most 128 characters"),
    ({"group_id": "g\x00"}, "group_id: Value error, must not contain NUL"),
    ({"regions": "dup"}, "regions: Value error, duplicate region_id(s) ['edit-box']"),
])
def test_blank_instruction_and_duplicate_region_ids_are_422(shared_server, server_token, change, needle):
    src = photo("astronaut", 64)
    if change.get("regions") == "dup":
        regs = box_regions(64, 64)
        regs[1]["region_id"] = regs[0]["region_id"]
        change = {"regions": regs}
    r = post(shared_server, body_of(src, edits_of(src, 1), **change), server_token)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"]


def test_region_ids_must_be_unique_for_every_caller():
    with pytest.raises(InvalidInput, match=r"duplicate region_id\(s\) \['a'\]"):
        normalize_regions([{"kind": "edit", "bbox": [0, 0, 4, 4], "region_id": "a"},
                           {"kind": "context", "bbox": [4, 4, 8, 8], "region_id": "a"}], 16, 16)
    with pytest.raises(InvalidInput, match="collide with the generated ones"):
        normalize_regions([{"kind": "edit", "bbox": [0, 0, 4, 4]},
                           {"kind": "context", "bbox": [4, 4, 8, 8], "region_id": "r0"}], 16, 16)
