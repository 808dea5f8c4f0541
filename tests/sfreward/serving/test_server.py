"""The reward server on a free 127.0.0.1 port (uvicorn in a thread) with the tiny model."""
from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from sfreward.credit import region_advantages
from sfreward.server.batcher import BatcherConfig
from tests.fixtures.serving import GatedModel, box_regions, edits_of, photo, png


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def payload(src: np.ndarray, edits: list, instruction: str = "recolour the box", **kw) -> dict:
    return {"instruction": instruction, "source": b64(png(src)),
            "edits": [e if isinstance(e, str) else b64(png(e)) for e in edits], **kw}


def post(srv, body, token, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{srv.url}/v1/score_group", json=body, headers=headers, timeout=60, **kw)


def test_health_and_version_carry_model_version(shared_server, tiny_scorer):
    for path in ("/health", "/version"):
        r = httpx.get(shared_server.url + path)
        assert r.status_code == 200
        assert r.json()["model_version"] == tiny_scorer.version
        assert r.headers["x-model-version"] == tiny_scorer.version
    assert httpx.get(shared_server.url + "/version").json()["image_size"] == [64, 64]


def test_auth_refused_without_or_with_wrong_token(shared_server, server_token):
    src = photo("astronaut", 64)
    body = payload(src, edits_of(src, 1))
    for token in (None, "wrong-token-123456", server_token + "x"):
        r = post(shared_server, body, token)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["message"] == "missing or invalid bearer token"
        assert r.headers["x-model-version"]  # version even on errors
        assert server_token not in r.text
    assert post(shared_server, body, server_token).status_code == 200


def test_oversized_payloads_get_413(shared_server, server_token):
    big = {"instruction": "x", "source": "A" * (3 << 20), "edits": ["A"]}
    r = post(shared_server, big, server_token)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit must hold while streaming
        yield b'{"instruction": "x", "source": "'
        for _ in range(40):
            yield b"A" * (1 << 16)
        yield b'", "edits": ["A"]}'
    r = httpx.post(f"{shared_server.url}/v1/score_group", content=chunks(), timeout=60,
                   headers={"Authorization": f"Bearer {server_token}", "Content-Type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"instruction": "x", "source": "%%%", "edits": ["AAAA"]}).encode(), 400, "source: not valid base64"),
    (json.dumps({"instruction": "x", "source": "AAAA"}).encode(), 422, "edits"),
    (json.dumps({"instruction": "", "source": "AAAA", "edits": ["AAAA"]}).encode(), 422, "instruction"),
    (json.dumps({"instruction": "x", "source": "AAAA", "edits": ["AAAA"], "bogus": 1}).encode(), 422, "bogus"),
    (json.dumps({"instruction": "x", "source": "AAAA", "edits": ["AAAA"] * 17}).encode(), 422, "at most 16"),
    (json.dumps({"instruction": "x", "source": "AAAA", "edits": ["AAAA"]}).encode(), 422, "source: cannot decode"),
])
def test_malformed_payloads_get_clear_4xx(shared_server, server_token, body, status, needle):
    r = httpx.post(f"{shared_server.url}/v1/score_group", content=body, timeout=60,
                   headers={"Authorization": f"Bearer {server_token}", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_wrong_content_type_and_bad_regions(shared_server, server_token):
    r = httpx.post(f"{shared_server.url}/v1/score_group", content=b"abc", timeout=60,
                   headers={"Authorization": f"Bearer {server_token}", "Content-Type": "text/plain"})
    assert r.status_code == 415
    src = photo("coffee", 64)
    bad = [{"kind": "edit", "bbox": [0, 0, 10, 10]}, {"kind": "edit", "mask": {"size": [8, 8], "counts": "0"}}]
    r = post(shared_server, payload(src, edits_of(src, 1), regions=bad), server_token)
    assert r.status_code == 422 and "region 1" in r.json()["error"]["message"]


def test_group_scores_equal_direct_scoring_and_advantages(shared_server, server_token, tiny_scorer):
    src = photo("chelsea", 96)
    edits = edits_of(src, 4, seed=3)
    regions = box_regions(96, 96)
    r = post(shared_server, payload(src, edits, regions=regions, group_id="g1"), server_token)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["region_source"] == "supplied" and out["group_id"] == "g1"
    assert [x["region_id"] for x in out["regions"]] == ["edit-box", "ctx-box", "background"]
    direct = tiny_scorer.score([src] * 4, edits, "recolour the box", [regions] * 4)
    got = np.array(out["rewards"])
    np.testing.assert_allclose(got, np.array([d.rewards for d in direct]), atol=1e-5)
    adv = region_advantages(torch.tensor(got, dtype=torch.float32), torch.ones(got.shape, dtype=torch.bool))
    np.testing.assert_allclose(np.array(out["advantages"], dtype=float), adv.advantages.numpy(), atol=1e-5)
    assert adv.mask.all()
    assert out["items"][0]["regions"][0]["success_std"] > 0


def test_bad_edit_is_an_invalid_item_not_a_failed_request(shared_server, server_token):
    src = photo("rocket", 64)
    good = edits_of(src, 2, seed=5)
    body = payload(src, [good[0], b64(b"not an image"), good[1], b64(png(photo("rocket", 48)))])
    out = post(shared_server, body, server_token).json()
    assert out["valid"] == [True, False, True, False]
    assert "edits[1]: cannot decode" in out["items"][1]["error"]
    assert "edits[3]: size 48x48 differs" in out["items"][3]["error"]
    assert out["advantages"][1] is None and out["rewards"][3] is None
    assert out["n_valid"] == 2
    assert all(np.isfinite(out["advantages"][0]))


def test_multipart_upload_equals_json(shared_server, server_token):
    src = photo("astronaut", 64)
    edits = edits_of(src, 2, seed=9)
    js = post(shared_server, payload(src, edits), server_token).json()
    files = [("source", ("s.png", png(src), "image/png"))] + \
            [("edits", (f"e{i}.png", png(e), "image/png")) for i, e in enumerate(edits)]
    r = httpx.post(f"{shared_server.url}/v1/score_group", files=files, data={"instruction": "recolour the box"},
                   headers={"Authorization": f"Bearer {server_token}"}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["rewards"], js["rewards"], atol=1e-6)


def _multipart(srv, token, files, data, content_type=None) -> httpx.Response:
    req = httpx.Request("POST", f"{srv.url}/v1/score_group", files=files, data=data,
                        headers={"Authorization": f"Bearer {token}"})
    body = req.read()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type or req.headers["content-type"]}
    return httpx.post(f"{srv.url}/v1/score_group", content=body, headers=headers, timeout=60)


def test_multipart_fields_and_problems(shared_server, server_token):
    """Every text field reaches the request (regions, group id, metadata, std, capture), and
    each malformed multipart body gets its own 4xx naming the part."""
    src = photo("coffee", 64)
    edits = edits_of(src, 2, seed=2)
    files = [("source", ("s.png", png(src), "image/png"))] + \
            [("edits", (f"e{i}.png", png(e), "image/png")) for i, e in enumerate(edits)]
    regions = box_regions(64, 64)
    data = {"instruction": "recolour the box", "regions": json.dumps(regions), "group_id": "g-9",
            "metadata": json.dumps({"step": 4}), "std": "global", "capture": "false"}
    r = _multipart(shared_server, server_token, files, data)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["group_id"] == "g-9" and out["region_source"] == "supplied"
    assert [reg["region_id"] for reg in out["regions"]] == ["edit-box", "ctx-box", "background"]
    js = post(shared_server, payload(src, edits, regions=regions, std="global", capture=False), server_token).json()
    np.testing.assert_allclose(out["advantages"], js["advantages"], atol=1e-6)

    cases = [
        (files, data, "multipart/form-data", 400, "no boundary"),
        (files, {**data, "regions": "[{"}, None, 400, "field `regions` is not valid JSON"),
        (files[1:], data, None, 422, "exactly one file field `source`"),
        (files[:1], data, None, 422, "file fields `edits` are required"),
        (files[:1] + [("edits", (None, "not a file", "text/plain"))], data, None, 422, "`edits` are required"),
        (files + [("edits", (f"x{i}.png", png(src), "image/png")) for i in range(16)], data, None, 422,
         "at most 17 files"),
    ]
    for f, d, ctype, status, needle in cases:
        r = _multipart(shared_server, server_token, f, d, ctype)
        assert r.status_code == status, (needle, r.text)
        assert needle in r.json()["error"]["message"], r.text
    big = files[:1] + [("edits", ("big.npy", b"\0" * (3 << 20), "application/octet-stream"))]
    r = _multipart(shared_server, server_token, big, data)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]
    body = b"--xyz\r\nContent-Disposition: form-data; name=\"source\"; filename=\"s\"\r\n\r\nabc"  # truncated
    r = httpx.post(f"{shared_server.url}/v1/score_group", content=body, timeout=60,
                   headers={"Authorization": f"Bearer {server_token}", "Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code in (400, 422) and "multipart" in r.json()["error"]["message"], r.text


def test_burst_of_concurrent_requests_answered_like_serial(start_server, server_token, tiny_scorer):
    srv = start_server(batch=BatcherConfig(max_batch_size=16, max_wait_ms=30, max_queue=512))
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    jobs = []
    for k in range(24):
        src = photo(names[k % 4], 64)
        jobs.append((src, edits_of(src, 1 + k % 3, seed=k), f"edit number {k}"))
    with ThreadPoolExecutor(24) as pool, httpx.Client(timeout=120) as client:
        resp = list(pool.map(lambda j: client.post(
            f"{srv.url}/v1/score_group", json=payload(j[0], j[1], j[2]),
            headers={"Authorization": f"Bearer {server_token}"}), jobs))
    assert [r.status_code for r in resp] == [200] * 24
    stats = srv.app.state.batcher.stats
    for (src, edits, instr), r in zip(jobs, resp):
        out = r.json()
        assert out["region_source"] == "proposed"  # proposed once per group, on the source
        regions = [{k: reg[k] for k in ("kind", "mask", "region_id")} for reg in out["regions"]]
        serial = tiny_scorer.score([src] * len(edits), edits, instr, [regions] * len(edits))
        np.testing.assert_allclose(np.array(out["rewards"]), np.array([s.rewards for s in serial]), atol=1e-5)
    assert stats.items == sum(len(j[1]) for j in jobs)
    assert stats.max_batch_seen > 1, "no two requests were batched together"
    assert stats.calls < len(jobs)


def test_queue_full_gives_503_with_retry_after(start_server, server_token, tiny_scorer):
    from sfreward.inference import Scorer

    gated = GatedModel(tiny_scorer.model)
    scorer = Scorer(gated, tiny_scorer.version, "cpu")
    srv = start_server(scorer=scorer, max_group_size=2,
                       batch=BatcherConfig(max_batch_size=2, max_wait_ms=1, max_queue=4))
    src = photo("coffee", 64)
    body = payload(src, edits_of(src, 2))
    results: dict[str, httpx.Response] = {}

    def send(name):
        results[name] = post(srv, body, server_token)

    threads = [threading.Thread(target=send, args=("a",))]
    threads[0].start()
    assert gated.entered.wait(30)        # request a is inside the model, the queue is empty
    for name in ("b", "c"):              # 2 + 2 items: the queue is now full (4)
        t = threading.Thread(target=send, args=(name,))
        t.start()
        threads.append(t)
    batcher = srv.app.state.batcher
    for _ in range(500):
        if batcher.pending == 4:
            break
        threading.Event().wait(0.01)
    assert batcher.pending == 4
    r = post(srv, body, server_token)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert "queue full" in r.json()["error"]["message"]
    gated.gate.set()
    for t in threads:
        t.join(60)
    assert [results[k].status_code for k in "abc"] == [200, 200, 200]
    assert post(srv, body, server_token).status_code == 200


def test_long_base64_decodes_like_the_standard_library():
    import binascii

    from sfreward.server.payload import HTTPError, _b64

    def std(s: str):
        try:
            return base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            return "refused"

    def ours(s: str):
        try:
            return _b64(s, "edits[0]")
        except HTTPError as e:
            assert (e.status, e.message) == (400, "edits[0]: not valid base64")
            return "refused"

    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 30_000, dtype=np.uint8).tobytes()
    cases = []
    for n in (30_000, 29_999, 29_998):          # no padding, "=", "=="
        s = b64(data[:n])
        cases += [s, "data:image/png;base64," + s, s[:-1], s[:-2] + "==", s[:-4] + "A===",
                  s[:-4] + "AB=C", s + "====", s[:5000] + "\n" + s[5001:], s[:5000] + "=" + s[5001:],
                  s[:5000] + "-" + s[5001:], s[:5000] + "é" + s[5001:], s[:-3] + "QR=="]
    for s in cases:
        assert ours(s) == std(s.partition(",")[2] if s.startswith("data:") else s)
    assert ours(b64(data)) == data
