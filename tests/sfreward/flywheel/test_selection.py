"""The flywheel's warehouse side on real captured batches (RolloutCapture + the tiny model),
a real DuckDB warehouse and real registered models: scores, the daily budget across batches,
decisions recorded once, and clear errors."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from sfreward.flywheel import FlywheelConfig
from sfreward.flywheel.selection import FlywheelError, decide_batch, recorded, register_captured_batches
from sfreward.server.capture import CaptureConfig, RolloutCapture
from tests.fixtures.serving import edits_of, photo, png
from warehouse.db import Warehouse
from warehouse.ingest import ingest_batch

DAY = "2026-11-30"


def capture_batch(ws, scorer, name: str, n: int = 4, seed: int = 0):
    """One batch written by the server's capture (rate 1, window n), its captured_at pinned to
    DAY so that the test does not depend on the date it runs."""
    cap = RolloutCapture(ws, CaptureConfig(rate=1.0, window=n))
    src = photo(name, 64)
    edits = edits_of(src, n, seed=seed)
    res = scorer.score([src] * n, edits, f"recolour the {name}")
    path = cap.offer(png(src), [png(e) for e in edits], res, f"recolour the {name}")
    manifest = path / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:
        assert datetime.fromisoformat(r["metadata"]["captured_at"]).utcoffset().total_seconds() == 0
        r["metadata"]["captured_at"] = f"{DAY}T10:00:00+00:00"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, {r["sample_id"]: r["metadata"]["uncertainty"] for r in rows}


def ingest_captured(ws):
    ids = register_captured_batches(ws)
    for b in ids.values():
        assert ingest_batch(ws, b).quarantined == 0
    return ids


def test_std_policy_budget_across_batches_and_recorded_once(workspace, tiny_scorer):
    p1, u1 = capture_batch(workspace, tiny_scorer, "astronaut", seed=0)
    p2, u2 = capture_batch(workspace, tiny_scorer, "coffee", seed=1)
    ids = ingest_captured(workspace)
    assert list(ids) == sorted([p1.name, p2.name])
    b1, b2 = ids[p1.name], ids[p2.name]
    cfg = FlywheelConfig(daily_budget=5, k_per_batch=3, policy="auto")   # no candidate: std

    d1 = decide_batch(workspace, b1, cfg)
    assert d1.policy == "std" and (d1.n_candidates, d1.n_scored) == (4, 4) and not d1.recorded_before
    top3 = sorted(u1, key=lambda s: (-u1[s], s))[:3]
    assert [p.candidate.sample_id for p in d1.picks] == top3
    assert [p.candidate.score for p in d1.picks] == pytest.approx([u1[s] for s in top3])
    assert d1.used_per_day == {DAY: 3}

    d2 = decide_batch(workspace, b2, cfg)          # 2 left of the day's 5
    assert [p.candidate.sample_id for p in d2.picks] == sorted(u2, key=lambda s: (-u2[s], s))[:2]
    assert d2.used_per_day == {DAY: 5}

    # Reruns read the decision back: same picks, no budget spent twice, even with a bigger budget.
    again = decide_batch(workspace, b1, FlywheelConfig(daily_budget=100, k_per_batch=4))
    assert again.recorded_before and again.picks == d1.picks
    back = recorded(Warehouse.open(workspace), b2)
    assert back.picks == d2.picks and back.project_key == cfg.project_key and back.recorded_before
    assert recorded(Warehouse.open(workspace), "no-such-batch") is None
    wh = Warehouse.open(workspace)
    assert wh.query("SELECT CAST(day AS VARCHAR), count(*) FROM flywheel_selections GROUP BY day") == [(DAY, 5)]
    assert wh.query("SELECT batch_id, n_selected FROM flywheel_decisions ORDER BY n_selected") == [(b2, 2), (b1, 3)]


def test_disagreement_policy_when_a_candidate_exists(workspace, tiny_scorer, tiny_model_dir, tmp_path):
    import torch

    import sfreward
    from sfreward import registry
    from sfreward.model import SFRewardConfig, SFRewardModel

    torch.manual_seed(1)
    other = tmp_path / "candidate-model"
    SFRewardModel(SFRewardConfig(image_size=64)).save_pretrained(other)
    prod = registry.register_model(workspace, tiny_model_dir, None, alias="production")
    cand = registry.register_model(workspace, other, None, alias="candidate")
    path, _ = capture_batch(workspace, tiny_scorer, "chelsea", n=4)
    (b,) = ingest_captured(workspace).values()

    d = decide_batch(workspace, b, FlywheelConfig(daily_budget=10, k_per_batch=2))
    assert (d.policy, d.production_id, d.candidate_id) == ("disagreement", prod, cand)
    # Independently: both models score the captured images whole-image; the picks are the top 2.
    rows = Warehouse.open(workspace).query(
        "SELECT s.sample_id, si.uri, ei.uri, s.instruction FROM samples s JOIN images si ON si.sha256 = s.source_sha256 "
        "JOIN images ei ON ei.sha256 = s.edited_sha256 WHERE s.batch_id = ? ORDER BY s.sample_id", [b])
    args = ([workspace.absolute(r[1]) for r in rows], [workspace.absolute(r[2]) for r in rows], [r[3] for r in rows])
    a = sfreward.load(other, device="cpu").score(*args)
    p = sfreward.load(tiny_model_dir, device="cpu").score(*args)
    gap = {r[0]: abs(x.overall - y.overall) for r, x, y in zip(rows, a, p)}
    assert len(set(gap.values())) == 4 and min(gap.values()) > 0   # two different models disagree
    want = sorted(gap, key=lambda s: (-gap[s], s))[:2]
    assert [pk.candidate.sample_id for pk in d.picks] == want
    assert [pk.candidate.score for pk in d.picks] == pytest.approx([gap[s] for s in want], abs=1e-5)

    # policy 'std' is still available explicitly; once decided, the batch keeps its decision.
    assert decide_batch(workspace, b, FlywheelConfig(policy="std")).policy == "disagreement"


def test_errors_name_the_problem_and_record_nothing(workspace, tiny_scorer, tiny_model_dir):
    from sfreward import registry

    path, _ = capture_batch(workspace, tiny_scorer, "rocket")
    (b,) = register_captured_batches(workspace).values()
    with pytest.raises(FlywheelError, match="has not been ingested; materialize editing_samples"):
        decide_batch(workspace, b, FlywheelConfig())
    ingest_batch(workspace, b)
    registry.register_model(workspace, tiny_model_dir, None, alias="production")
    with pytest.raises(FlywheelError, match="needs a candidate model other than production"):
        decide_batch(workspace, b, FlywheelConfig(policy="disagreement"))
    assert Warehouse.open(workspace).query("SELECT count(*) FROM flywheel_decisions") == [(0,)]
    assert len(decide_batch(workspace, b, FlywheelConfig(policy="std", k_per_batch=1)).picks) == 1


def test_register_skips_unwritten_captures_and_quarantines_bad_rows(workspace, tiny_scorer):
    path, _ = capture_batch(workspace, tiny_scorer, "astronaut")
    (workspace.batches / "capture-20261130-235959-1" / "images").mkdir(parents=True)   # manifest not written yet
    bad = workspace.batches / "capture-20261130-235959-2"
    bad.mkdir()
    (bad / "manifest.jsonl").write_text("{not json\n")
    (workspace.batches / "other-batch").mkdir()
    got = register_captured_batches(workspace)
    # in capture order (folder names hold the capture time); the real capture is named by the
    # clock, so it may sort before or after the hand-made folders
    assert list(got) == sorted([path.name, bad.name])
    assert register_captured_batches(workspace, skip={path.name, bad.name}) == {}
    # The bad row is ingestion's to quarantine; the policy then has nothing to choose from.
    s = ingest_batch(workspace, got[bad.name])
    assert (s.ingested, s.quarantined) == (0, 1)
    d = decide_batch(workspace, got[bad.name], FlywheelConfig())
    assert (d.n_candidates, d.picks) == (0, [])


def test_odd_capture_metadata_is_handled_per_row(workspace, tiny_scorer):
    """A row whose uncertainty is not a number is never picked; a capture time that is not one
    (or a naive one) falls back to the registration day (or is read as UTC); the rest go on."""
    path, u = capture_batch(workspace, tiny_scorer, "astronaut")
    manifest = path / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0]["metadata"]["uncertainty"] = "high"
    rows[1]["metadata"]["captured_at"] = "2026-13-45T10:00:00"
    rows[2]["metadata"]["captured_at"] = "2026-11-29T23:30:00-02:00"   # 01:30 UTC on the 30th
    rows[3]["metadata"]["captured_at"] = "2026-11-28T12:00:00"         # naive: UTC
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (b,) = ingest_captured(workspace).values()
    d = decide_batch(workspace, b, FlywheelConfig(daily_budget=10, k_per_batch=10))
    (registered,) = Warehouse.open(workspace).query(
        "SELECT CAST(CAST(created_at AS DATE) AS VARCHAR) FROM batches WHERE batch_id = ?", [b])[0]
    days = {p.candidate.sample_id: p.candidate.day for p in d.picks}
    assert (d.n_candidates, d.n_scored) == (4, 3) and rows[0]["sample_id"] not in days
    assert days == {rows[1]["sample_id"]: registered, rows[2]["sample_id"]: "2026-11-30",
                    rows[3]["sample_id"]: "2026-11-28"}
