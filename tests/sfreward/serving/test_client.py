"""RewardClient (retries, failures raise) and the Flow-GRPO reward function, against a real server."""
from __future__ import annotations

import logging
import socket
import threading
import time

import numpy as np
import pytest
import torch

from sfreward.client import ClientConfig, RewardClient, RewardServerError, make_flow_grpo_reward_fn
from sfreward.server.batcher import BatcherConfig
from tests.fixtures.serving import GatedModel, box_regions, edits_of, photo

FAST = ClientConfig(timeout_s=60, retries=3, backoff_s=0.01, max_backoff_s=0.05)


def test_unreachable_server_raises_after_retries(caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RewardClient(f"http://127.0.0.1:{port}", token="t" * 16, config=FAST)
    src = photo("coffee", 32)
    with caplog.at_level(logging.WARNING, logger="sfreward.client"):
        with pytest.raises(RewardServerError, match="failed after 4 tries: ConnectError") as e:
            client.score_group(src, [src], "x")
    assert e.value.status is None
    assert len([r for r in caplog.records if "retry" in r.message]) == 3


def test_refusals_are_not_retried_and_name_the_problem(shared_server, caplog):
    src = photo("coffee", 32)
    bad = RewardClient(shared_server.url, token="wrong-token-value", config=FAST)
    with caplog.at_level(logging.WARNING, logger="sfreward.client"):
        with pytest.raises(RewardServerError, match="HTTP 401: missing or invalid bearer token") as e:
            bad.score_group(src, [src], "x")
    assert e.value.status == 401
    assert not [r for r in caplog.records if "retry" in r.message]
    assert "wrong-token-value" not in str(e.value)


def test_client_retries_a_full_queue_until_it_gets_through(start_server, tiny_scorer, server_token, caplog):
    from sfreward.inference import Scorer

    gated = GatedModel(tiny_scorer.model)
    srv = start_server(scorer=Scorer(gated, tiny_scorer.version, "cpu"), max_group_size=1,
                       batch=BatcherConfig(max_batch_size=1, max_wait_ms=1, max_queue=1))
    client = RewardClient(srv.url, token=server_token,
                          config=ClientConfig(retries=40, backoff_s=0.05, max_backoff_s=0.05))
    src = photo("astronaut", 64)
    first, second = edits_of(src, 2)
    blockers = [threading.Thread(target=client.score_group, args=(src, [first], "x"))]
    blockers[0].start()                 # in the model (gated)
    assert gated.entered.wait(30)
    blockers.append(threading.Thread(target=client.score_group, args=(src, [second], "x")))
    blockers[1].start()                 # fills the queue
    for _ in range(500):
        if srv.app.state.batcher.pending == 1:
            break
        time.sleep(0.01)
    assert srv.app.state.batcher.pending == 1
    threading.Timer(0.5, gated.gate.set).start()
    with caplog.at_level(logging.WARNING, logger="sfreward.client"):
        out = client.score_group(src, edits_of(src, 1, seed=4), "x")
    for t in blockers:
        t.join(30)
    assert out["valid"] == [True]
    assert any("HTTP 503" in r.message for r in caplog.records)


def test_flow_grpo_reward_fn_groups_and_scores(shared_server, server_token, tiny_scorer):
    client = RewardClient(shared_server.url, token=server_token, config=FAST)
    fn = make_flow_grpo_reward_fn(client, reduce="mean")
    a, b = photo("chelsea", 64), photo("rocket", 64)
    ea, eb = edits_of(a, 3, seed=1), edits_of(b, 2, seed=2)
    order = [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1)]
    imgs = torch.stack([torch.from_numpy((ea if s == "a" else eb)[j]).permute(2, 0, 1).float() / 255
                        for s, j in order])
    prompts = ["make it warmer" if s == "a" else "make it cooler" for s, _ in order]
    meta = [{"source": a if s == "a" else b} for s, _ in order]
    meta[1]["regions"] = meta[4]["regions"] = box_regions(64, 64)   # group b brings its own regions
    scores, info = fn(imgs, prompts, meta)
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert info["group_index"] == [0, 1, 0, 0, 1]
    assert info["valid"] == [True] * 5 and info["model_version"] == tiny_scorer.version
    assert info["region_ids"][1] == ["edit-box", "ctx-box", "background"]
    for i, (s, j) in enumerate(order):
        regions = [{k: r[k] for k in ("kind", "mask", "region_id")} for r in info["regions"][i]]
        [direct] = tiny_scorer.score([a if s == "a" else b], [(ea if s == "a" else eb)[j]], prompts[i], [regions])
        assert scores[i] == pytest.approx(np.mean(direct.rewards), abs=1e-5)
        assert info["region_rewards"][i] == pytest.approx(direct.rewards, abs=1e-5)
    # advantages are group-relative: each region's advantages over group a sum to ~0
    adv_a = np.array([info["advantages"][i] for i in (0, 2, 3)], dtype=float)
    np.testing.assert_allclose(adv_a.sum(0), 0, atol=1e-3)

    broken = [dict(m) for m in meta]
    broken[2]["source"] = photo("chelsea", 48)  # source size differs from the rollout
    with pytest.raises(RewardServerError, match="rollout 2 could not be scored"):
        fn(imgs, prompts, broken)
    nan_fn = make_flow_grpo_reward_fn(client, on_invalid="nan")
    s2, info2 = nan_fn(imgs, prompts, broken)
    assert np.isnan(s2[2]) and info2["valid"][2] is False and np.isfinite(s2[[0, 1, 3, 4]]).all()


def test_multipart_and_json_transports_give_the_same_answer(shared_server, server_token):
    """The default transport (raw multipart file parts) and base64-in-JSON carry the same
    images, regions, group id and metadata."""
    src = photo("chelsea", 64)
    edits = edits_of(src, 3, seed=4)
    regions = box_regions(64, 64)
    answers = {}
    for transport in ("multipart", "json"):
        cfg = ClientConfig(timeout_s=60, retries=0, transport=transport)
        with RewardClient(shared_server.url, token=server_token, config=cfg) as client:
            answers[transport] = client.score_group(src, edits, "recolour the box", regions=regions,
                                                    group_id="g-7", metadata={"step": 3}, capture=False)
    mp, js = answers["multipart"], answers["json"]
    assert mp["n_valid"] == 3 and mp["group_id"] == "g-7" and mp["region_source"] == "supplied"
    np.testing.assert_allclose(mp["rewards"], js["rewards"], atol=1e-6)
    np.testing.assert_allclose(mp["advantages"], js["advantages"], atol=1e-6)
    assert [r["mask"] for r in mp["regions"]] == [r["mask"] for r in js["regions"]]


def test_client_config_refuses_unknown_transport_and_format():
    with pytest.raises(ValueError, match="transport must be one of"):
        ClientConfig(transport="grpc")
    with pytest.raises(ValueError, match="image_format must be one of"):
        ClientConfig(image_format="tiff")
