"""Model pinning, alias reload on promotion and /metrics, with two real registered tiny models
served over real HTTP from the registry."""
from __future__ import annotations

import re

import httpx
import pytest
import torch

from sfreward import registry
from sfreward.server.app import BackgroundServer, ServerConfig, create_app
from sfreward.server.batcher import BatcherConfig
from sfreward.server.metrics import Histogram, Metrics
from sfreward.server.models import ModelPool, PoolConfig
from tests.fixtures.serving import box_regions, edits_of, photo
from tests.sfreward.serving.test_server import payload, post


@pytest.fixture
def two_models(workspace, tmp_path):
    """v1 (production) and v2 (candidate): the tiny model with different seeds."""
    from sfreward.model import SFRewardConfig, SFRewardModel

    ids = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        d = tmp_path / f"m{seed}"
        SFRewardModel(SFRewardConfig(image_size=64)).save_pretrained(d)
        ids.append(registry.register_model(workspace, d, dataset_id=None))
    registry.promote(workspace, ids[0], "production", force=True)
    return ids


def metric(text: str, name: str, **labels) -> float:
    """The value of one series of a Prometheus text exposition (0 when absent)."""
    lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = "^" + re.escape(name + (f"{{{lab}}}" if lab else "")) + r" (\S+)$"
    m = re.search(pat, text, re.M)
    return float(m.group(1)) if m else 0.0


def test_pinned_requests_keep_their_version_across_promotion(workspace, two_models, server_token):
    v1, v2 = two_models
    pool = ModelPool.from_registry(workspace, "production", device="cpu", config=PoolConfig(refresh_s=0))
    cfg = ServerConfig(token=server_token, batch=BatcherConfig(max_batch_size=16, max_wait_ms=1))
    src = photo("astronaut", 64)
    body = payload(src, edits_of(src, 4), regions=box_regions(64, 64))
    auth = {"Authorization": f"Bearer {server_token}"}
    with BackgroundServer(create_app(pool, cfg)) as srv:
        assert httpx.get(srv.url + "/version").json()["model_version"] == v1
        r1 = post(srv, body, server_token)
        assert r1.status_code == 200 and r1.json()["model_version"] == v1 and r1.headers["x-model-version"] == v1
        pinned = httpx.post(srv.url + "/v1/score_group", json=body, headers={**auth, "X-SFR-Model": v1}, timeout=60)
        assert pinned.json()["rewards"] == r1.json()["rewards"]

        registry.promote(workspace, v2, "production", force=True)     # no restart

        r2 = post(srv, body, server_token)
        assert r2.status_code == 200 and r2.json()["model_version"] == v2 and r2.headers["x-model-version"] == v2
        assert r2.json()["rewards"] != r1.json()["rewards"]          # really the other weights
        for how in ({"headers": {**auth, "X-SFR-Model": v1}, "json": body},
                    {"headers": auth, "json": {**body, "model": v1}}):
            r = httpx.post(srv.url + "/v1/score_group", timeout=60, **how)
            assert r.status_code == 200
            assert r.json()["model_version"] == v1 and r.headers["x-model-version"] == v1
            assert r.json()["rewards"] == r1.json()["rewards"]
        # RewardClient pins the same way (ClientConfig.model).
        from sfreward.client import ClientConfig, RewardClient
        with RewardClient(srv.url, token=server_token, config=ClientConfig(model=v1)) as client:
            ans = client.score_group(src, edits_of(src, 4), "recolour the box", regions=box_regions(64, 64))
        assert ans["model_version"] == v1 and ans["rewards"] == r1.json()["rewards"]
        # An alias pin follows the alias; the in-process scorer agrees with the served v2.
        r = httpx.post(srv.url + "/v1/score_group", json=body, headers={**auth, "X-SFR-Model": "production"}, timeout=60)
        assert r.json()["model_version"] == v2
        import sfreward

        direct = sfreward.load(v2, home=workspace.home, device="cpu").score(
            [src] * 4, edits_of(src, 4), "recolour the box", [box_regions(64, 64)] * 4)
        served = [x for row in r.json()["rewards"] for x in row]
        assert served == pytest.approx([x for d in direct for x in d.rewards], abs=1e-5)

        info = httpx.get(srv.url + "/version").json()
        assert info["model_version"] == v2 and set(info["loaded_models"]) == {v1, v2}
        bad = httpx.post(srv.url + "/v1/score_group", json=body, headers={**auth, "X-SFR-Model": "sfr-nope"}, timeout=60)
        assert bad.status_code == 422 and "no model or alias 'sfr-nope'" in bad.json()["error"]["message"]
        long = httpx.post(srv.url + "/v1/score_group", json=body, headers={**auth, "X-SFR-Model": "m" * 5000}, timeout=60)
        assert long.status_code == 422 and "at most" in long.json()["error"]["message"] and "m" * 100 not in long.text
        clash = httpx.post(srv.url + "/v1/score_group", json={**body, "model": v2},
                           headers={**auth, "X-SFR-Model": v1}, timeout=60)
        assert clash.status_code == 422 and "disagree" in clash.json()["error"]["message"]
        m = httpx.get(srv.url + "/metrics").text
    assert metric(m, "sfr_items_scored_total", model_version=v1) == 20   # 5 requests of 4 (one through RewardClient)
    assert metric(m, "sfr_items_scored_total", model_version=v2) == 8    # 2 requests of 4
    assert metric(m, "sfr_model_reloads_total") == 1
    assert metric(m, "sfr_errors_total", route="/v1/score_group", status=422) == 3


def test_pool_keeps_a_bounded_lru_and_never_evicts_the_default(workspace, two_models):
    v1, v2 = two_models
    pool = ModelPool.from_registry(workspace, "production", device="cpu",
                                   config=PoolConfig(max_loaded=1, refresh_s=3600))
    assert pool.loaded_versions() == [v1]
    assert pool.get(v2).version == v2 and pool.loaded_versions() == [v1]   # served, not kept
    registry.promote(workspace, v2, "production", force=True)
    assert pool.get(None).version == v1                # resolved less than refresh_s ago
    pool.config.refresh_s = 0
    assert pool.get(None).version == v2 and pool.loaded_versions() == [v2]


def test_metrics_endpoint_counts_requests_and_holds_no_secret(shared_server, server_token):
    src = photo("camera", 64)
    before = httpx.get(shared_server.url + "/metrics")
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain; version=0.0.4")
    b = before.text
    body = payload(src, edits_of(src, 3) + ["aGVsbG8="])      # 3 good edits, 1 undecodable
    assert post(shared_server, body, server_token).status_code == 200
    assert post(shared_server, body, "wrong-token-123456").status_code == 401
    a = httpx.get(shared_server.url + "/metrics").text
    d = {k: metric(a, *k[:1], **dict(k[1:])) - metric(b, *k[:1], **dict(k[1:])) for k in [
        ("sfr_requests_total", ("route", "/v1/score_group"), ("status", 200)),
        ("sfr_errors_total", ("route", "/v1/score_group"), ("status", 401)),
        ("sfr_items_invalid_total",), ("sfr_group_size_count",),
        ("sfr_group_size_bucket", ("le", "4")), ("sfr_group_size_bucket", ("le", "2")),
        ("sfr_request_duration_seconds_count", ("route", "/v1/score_group")),
    ]}
    assert list(d.values()) == [1, 1, 1, 1, 1, 0, 2]
    assert metric(a, "sfr_requests_total", route="/metrics", status=200) >= 1
    assert server_token not in a and "Bearer" not in a
    # Unknown paths share one label value: a scanner cannot grow the series.
    httpx.get(shared_server.url + "/no/such/path/123")
    assert "/no/such" not in httpx.get(shared_server.url + "/metrics").text


def test_histogram_exposition_is_cumulative():
    h = Histogram([1, 5, 10])
    for v in (0.5, 1, 3, 7, 50):
        h.observe(v)
    assert h.lines("x") == ['x_bucket{le="1"} 2', 'x_bucket{le="5"} 3', 'x_bucket{le="10"} 4',
                            'x_bucket{le="+Inf"} 5', "x_sum 61.5", "x_count 5"]
    m = Metrics()
    m.observe_request("/v1/score_group", 503, 0.2)
    text = m.render()
    assert 'sfr_errors_total{route="/v1/score_group",status="503"} 1' in text
    assert 'sfr_request_duration_seconds_bucket{route="/v1/score_group",le="0.25"} 1' in text
    assert 'sfr_request_duration_seconds_bucket{route="/v1/score_group",le="0.1"} 0' in text
