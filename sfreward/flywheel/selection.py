"""The data flywheel's warehouse side: captured batches, their scores, and the recorded decisions.

    ids = register_captured_batches(ws)             # {capture folder: batch id}
    d = decide_batch(ws, batch_id, FlywheelConfig()) # scores, applies the policy, records it once
    recorded(Warehouse.open(ws), batch_id)          # that decision read back (None: not decided)

Tables (migration 011): `flywheel_decisions` (one row per decided batch) and
`flywheel_selections` (one row per selected rollout, with the capture day it counts against).
A decision is taken inside one warehouse write transaction (read the day's usage, pick, record),
so two runs cannot both spend the same budget, and a batch decided once is never decided again.
Scoring with models (policy `disagreement`) happens before that transaction, never inside it.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from sfreward.flywheel.policy import Candidate, FlywheelConfig, Pick, select
from warehouse.db import Warehouse
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)


class FlywheelError(ValueError):
    pass


@dataclass
class CapturedRow:
    sample_id: str
    day: str
    uncertainty: float            # the serving model's predicted std (0..25), NaN when unknown
    instruction: str
    source_uri: str
    edited_uri: str


@dataclass
class Decision:
    batch_id: str
    policy: str
    production_id: str | None
    candidate_id: str | None
    n_candidates: int
    n_scored: int
    project_key: str                        # where the picks are pushed (recorded with the decision)
    picks: list[Pick] = field(default_factory=list)
    recorded_before: bool = False           # True: read back, not decided by this call
    used_per_day: dict[str, int] = field(default_factory=dict)   # after this decision

    def as_metadata(self) -> dict:
        return {"policy": self.policy, "project_key": self.project_key, "production_id": self.production_id or "",
                "candidate_id": self.candidate_id or "", "candidates": self.n_candidates,
                "scored": self.n_scored, "selected": len(self.picks), "recorded_before": self.recorded_before,
                "used_per_day": self.used_per_day,
                "selected_ids": [p.candidate.sample_id for p in self.picks]}


def register_captured_batches(ws: Workspace, skip: set[str] = frozenset()) -> dict[str, str]:
    """Register the rollout batches the reward server captured (<home>/batches/capture-*/
    manifest.jsonl), except folders named in `skip`; returns {folder name: batch id} in capture
    order (the names carry the UTC capture time). A folder whose manifest is not written yet
    is left for a later call; an unreadable one is skipped with a warning (and retried later)."""
    from warehouse.ingest import register_batch

    out = {}
    for manifest in sorted(ws.batches.glob("capture-*/manifest.jsonl")):
        name = manifest.parent.name
        if name in skip:
            continue
        try:
            out[name] = register_batch(ws, manifest, kind="capture")
        except ValueError as e:
            log.warning("captured batch %s is unreadable, skipped: %s", name, e)
    return out


def captured_rows(wh: Warehouse, batch_id: str) -> list[CapturedRow]:
    """The batch's samples with what the capture recorded (metadata `uncertainty`,
    `captured_at`); rows without `captured_at` count against the day the batch was registered."""
    rows = wh.query(
        "SELECT s.sample_id, s.metadata, s.instruction, si.uri, ei.uri, CAST(CAST(b.created_at AS DATE) AS VARCHAR) "
        "FROM samples s JOIN batches b ON b.batch_id = s.batch_id "
        "JOIN images si ON si.sha256 = s.source_sha256 JOIN images ei ON ei.sha256 = s.edited_sha256 "
        "WHERE s.batch_id = ? ORDER BY s.sample_id", [batch_id])
    out = []
    for sid, meta_text, instruction, src, ed, registered_day in rows:
        try:
            meta = json.loads(meta_text) if meta_text else {}
        except json.JSONDecodeError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        u = meta.get("uncertainty")
        u = float(u) if isinstance(u, (int, float)) and not isinstance(u, bool) else float("nan")
        out.append(CapturedRow(sid, _utc_day(meta.get("captured_at"), registered_day), u, instruction, src, ed))
    return out


def _utc_day(at, fallback: str) -> str:
    """YYYY-MM-DD (UTC) of an ISO 8601 time (naive = UTC); `fallback` when it is not one."""
    try:
        t = datetime.fromisoformat(at)
    except (TypeError, ValueError):
        return fallback
    return (t.astimezone(timezone.utc) if t.tzinfo is not None else t).date().isoformat()


def _alias(ws: Workspace, alias: str) -> str | None:
    from sfreward import registry

    try:
        return registry.resolve(ws, alias)
    except registry.RegistryError:
        return None


def resolve_policy(ws: Workspace, policy: str) -> tuple[str, str | None, str | None]:
    """(policy, production_id, candidate_id): 'auto' becomes 'disagreement' when a candidate
    other than production is registered, else 'std'."""
    prod, cand = _alias(ws, "production"), _alias(ws, "candidate")
    distinct = cand is not None and prod is not None and cand != prod
    if policy == "auto":
        policy = "disagreement" if distinct else "std"
    if policy == "disagreement" and not distinct:
        raise FlywheelError(f"flywheel policy 'disagreement' needs a candidate model other than production "
                            f"(production: {prod or 'none'}, candidate: {cand or 'none'}); register a candidate "
                            f"(sfr train) or use policy 'std'")
    return policy, prod, cand if policy == "disagreement" else None


def disagreement_scores(ws: Workspace, rows: list[CapturedRow], candidate_id: str, production_id: str,
                        device: str | None = "cpu") -> dict[str, float]:
    """sample_id -> |overall_candidate - overall_production| (0..25), both models scoring the
    same images whole-image (no regions); NaN where either model finds the item invalid."""
    from sfreward.inference import load

    if not rows:
        return {}
    sources = [ws.absolute(r.source_uri) for r in rows]
    edits = [ws.absolute(r.edited_uri) for r in rows]
    instructions = [r.instruction for r in rows]
    overall = []
    for ref in (candidate_id, production_id):
        scores = load(ref, home=ws.home, device=device).score(sources, edits, instructions)
        overall.append([s.overall if s.valid and s.overall is not None else float("nan") for s in scores])
    return {r.sample_id: abs(a - b) for r, a, b in zip(rows, *overall)}


def recorded(wh: Warehouse, batch_id: str) -> Decision | None:
    """The decision recorded for `batch_id`, or None."""
    d = wh.query_dicts("SELECT * FROM flywheel_decisions WHERE batch_id = ?", [batch_id])
    if not d:
        return None
    sel = wh.query("SELECT sample_id, CAST(day AS VARCHAR), rank, score FROM flywheel_selections "
                   "WHERE batch_id = ? ORDER BY rank", [batch_id])
    picks = [Pick(int(rank), Candidate(sid, day, float(score))) for sid, day, rank, score in sel]
    with wh.read() as con:
        used = _used(con, sorted({p.candidate.day for p in picks}))
    return Decision(batch_id, d[0]["policy"], d[0]["production_id"], d[0]["candidate_id"], int(d[0]["n_candidates"]),
                    int(d[0]["n_scored"]), json.loads(d[0]["config"])["project_key"], picks, recorded_before=True,
                    used_per_day=used)


def _used(con, days: list[str]) -> dict[str, int]:
    """day -> rollouts selected that day, over every batch (`con`: an open warehouse connection)."""
    if not days:
        return {}
    rows = con.execute("SELECT CAST(day AS VARCHAR), count(*) FROM flywheel_selections "
                       "WHERE CAST(day AS VARCHAR) IN (SELECT unnest(?)) GROUP BY day", [days]).fetchall()
    return {d: int(n) for d, n in rows}


def decide_batch(ws: Workspace, batch_id: str, config: FlywheelConfig, device: str | None = "cpu") -> Decision:
    """Apply the policy to one ingested captured batch and record the decision, once.

    A batch decided before returns its recorded decision (`recorded_before`), so a rerun never
    selects again and never spends budget twice. Raises FlywheelError when the batch was never
    ingested (nothing to decide on yet) or the policy cannot apply."""
    wh = Warehouse.open(ws)
    prior = recorded(wh, batch_id)
    if prior is not None:
        return prior
    b = wh.query("SELECT n_rows FROM batches WHERE batch_id = ?", [batch_id])
    if not b or not b[0][0]:
        raise FlywheelError(f"batch {batch_id!r} has not been ingested; materialize editing_samples for it first")
    rows = captured_rows(wh, batch_id)
    policy, prod, cand = resolve_policy(ws, config.policy)
    if policy == "disagreement":
        scores = disagreement_scores(ws, rows, cand, prod, device=device)
    else:
        scores = {r.sample_id: r.uncertainty for r in rows}
    candidates = [Candidate(r.sample_id, r.day, float(scores.get(r.sample_id, float("nan")))) for r in rows]
    n_scored = sum(math.isfinite(c.score) for c in candidates)
    with wh.write() as con:
        if con.execute("SELECT 1 FROM flywheel_decisions WHERE batch_id = ?", [batch_id]).fetchone():
            decided_elsewhere = True   # another run decided it while we were scoring
        else:
            decided_elsewhere = False
            used = _used(con, sorted({c.day for c in candidates}))
            picks = select(candidates, config, used)
            con.execute("INSERT INTO flywheel_decisions (batch_id, policy, production_id, candidate_id, config, "
                        "n_candidates, n_scored, n_selected) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [batch_id, policy, prod, cand, json.dumps(asdict(config), sort_keys=True), len(candidates),
                         n_scored, len(picks)])
            if picks:
                con.executemany("INSERT INTO flywheel_selections (sample_id, batch_id, day, rank, score) "
                                "VALUES (?, ?, CAST(? AS DATE), ?, ?)",
                                [[p.candidate.sample_id, batch_id, p.candidate.day, p.rank, p.candidate.score]
                                 for p in picks])
            used_after = _used(con, sorted({c.day for c in candidates}))
    if decided_elsewhere:
        return recorded(wh, batch_id)
    return Decision(batch_id, policy, prod, cand, len(candidates), n_scored, config.project_key, picks,
                    used_per_day=used_after)
