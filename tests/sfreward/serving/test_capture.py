"""Rollout capture: the most uncertain rollouts become an ingestion batch the warehouse reads."""
from __future__ import annotations

import json
import time

import pytest

from sfreward.client import RewardClient
from sfreward.server.capture import CaptureConfig, RolloutCapture
from tests.fixtures.serving import edits_of, photo, png
from warehouse.db import Warehouse
from warehouse.ingest import ingest_path


def test_capture_keeps_the_most_uncertain_and_ingests(workspace, tiny_scorer):
    cap = RolloutCapture(workspace, CaptureConfig(rate=0.25, window=8))
    srcs = [photo("astronaut", 64), photo("coffee", 64)]
    scored = []
    path = None
    for g, src in enumerate(srcs):
        edits = edits_of(src, 4, seed=g)
        res = tiny_scorer.score([src] * 4, edits, f"instruction {g}")
        res[1].valid = False  # an invalid item is never captured
        scored += [(r.uncertainty, g, png(e)) for r, e in zip(res, edits) if r.valid]
        path = cap.offer(png(src), [png(e) for e in edits], res, f"instruction {g}", group_id=f"trainer-{g}",
                         metadata={"editor": "policy-step-3", "category": "color_alter"})
        assert (path is None) == (g == 0)   # the window of 8 closes with the second group
    assert path is not None and path.parent == workspace.batches and path.name.startswith("capture-")
    rows = [json.loads(line) for line in (path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2                     # ceil(0.25 * 8)
    top = sorted(scored, reverse=True)[:2]
    assert [r["metadata"]["uncertainty"] for r in rows] == pytest.approx([u for u, _, _ in top])
    for row, (_, g, data) in zip(rows, top):
        assert (path / row["edited"]).read_bytes() == data
        assert row["metadata"]["trainer_group_id"] == f"trainer-{g}"
        assert row["editor"] == "policy-step-3" and "group_id" not in row
    assert not list(path.glob(".*.tmp"))

    summary = ingest_path(workspace, path / "manifest.jsonl")
    assert (summary.ingested, summary.quarantined) == (2, 0)
    got = Warehouse.open(workspace).query("SELECT instruction, category, metadata FROM samples ORDER BY instruction")
    assert {r[1] for r in got} == {"color_alter"}
    assert all(json.loads(r[2])["model_version"] == tiny_scorer.version for r in got)
    assert cap.flush() is None                # nothing held any more


def test_capture_rate_zero_and_bad_config(workspace):
    assert not RolloutCapture(workspace, CaptureConfig(rate=0.0)).enabled
    with pytest.raises(ValueError, match="rate"):
        CaptureConfig(rate=1.5)


def test_server_captures_scored_groups(workspace, start_server, server_token):
    cap = RolloutCapture(workspace, CaptureConfig(rate=1.0, window=3))
    srv = start_server(capture=cap)
    src = photo("chelsea", 64)
    # the client sends raw .npy by default; the batch must hold real image files
    out = RewardClient(srv.url, token=server_token).score_group(src, edits_of(src, 3), "warmer",
                                                                metadata={"editor": "policy"})
    assert out["valid"] == [True] * 3
    for _ in range(300):  # capture runs after the response, off the event loop
        if cap.written:
            break
        time.sleep(0.02)
    assert len(cap.written) == 1
    rows = [json.loads(x) for x in (cap.written[0] / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["edited"].endswith(".png") and r["editor"] == "policy" for r in rows)
    summary = ingest_path(workspace, cap.written[0] / "manifest.jsonl")
    assert (summary.ingested, summary.quarantined) == (3, 0)
