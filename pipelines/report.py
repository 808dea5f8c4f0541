"""The demo's closing report: counts at each stage, agreement, annotator quality, model
metrics, where the UIs are, and the held-out picture. Markdown under <home>/reports/.
Secrets stay out: the report names the credentials file instead of printing the password."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from warehouse.db import Warehouse
from warehouse.workspace import Workspace


def _one(wh: Warehouse, sql: str, params: list | None = None) -> Any:
    rows = wh.query(sql, params or [])
    return rows[0][0] if rows else None


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return out


def stage_counts(wh: Warehouse, batch_id: str) -> list[list[Any]]:
    q = lambda sql, p=None: _one(wh, sql, p)  # noqa: E731
    return [
        ["samples ingested (batch)", q("SELECT count(*) FROM samples WHERE batch_id = ?", [batch_id])],
        ["rows quarantined (batch)", q("SELECT count(*) FROM quarantine WHERE batch_id = ?", [batch_id])],
        ["GRPO groups", q("SELECT count(DISTINCT group_id) FROM samples WHERE batch_id = ?", [batch_id])],
        ["region sets / regions", f"{q('SELECT count(*) FROM region_sets')} / {q('SELECT count(*) FROM regions')}"],
        ["Label Studio tasks", q("SELECT count(*) FROM tasks")],
        ["annotators (simulated)", f"{q('SELECT count(*) FROM annotators')} "
                                   f"({q('SELECT count(*) FROM annotators WHERE is_simulated')})"],
        ["annotation versions synced", q("SELECT count(*) FROM annotation_versions")],
        ["current annotations (valid / skipped)",
         f"{q('SELECT count(*) FROM annotations WHERE NOT is_deleted')} "
         f"({q('SELECT count(*) FROM annotations WHERE valid AND NOT is_deleted')} / "
         f"{q('SELECT count(*) FROM annotations WHERE was_cancelled')})"],
        ["annotated regions", q("SELECT count(*) FROM annotation_regions")],
    ]


def annotator_throughput_section(wh: Warehouse) -> list[str]:
    """Per-annotator lead time, tasks per hour, explicit vs default ratings, agreement and gold
    accuracy (warehouse.curation.throughput); empty when nothing is annotated."""
    from warehouse.curation.throughput import annotator_throughput, throughput_markdown

    rows = annotator_throughput(wh)
    if not rows:
        return []
    return ["## Annotator throughput", "",
            "Lead time is Label Studio's `lead_time` (seconds in the editor); tasks / hour = 3600 / mean "
            "lead time; explicit ratings = share of region ratings clicked rather than filled by a default.",
            ""] + throughput_markdown(rows) + [""]


# What "works as a reward" means for the demo model (issue 13): on the leakage-free test split.
SRCC_MIN, AUROC_MIN, MIN_LOCALIZATION = 0.6, 0.9, 30


def reward_check_lines(path: Path) -> list[str]:
    """The 'does it work as a reward' table from heldout's reward_check.json (if present)."""
    if not path.exists():
        return []
    c = json.loads(path.read_text())
    lab, tru = c["vs_labels"], c["vs_truth"]

    def ok(v, floor):
        return "n/a" if v is None else ("pass" if v >= floor else "FAIL")
    rows = []
    for key, floor in (("region_srcc_mean", SRCC_MIN), ("region_srcc_success", None),
                       ("region_srcc_preserve", None), ("localization_auroc", AUROC_MIN),
                       ("localization_top1", None)):
        rows.append([key, lab.get(key), tru.get(key), "" if floor is None else f">= {floor}",
                     "" if floor is None else f"{ok(lab.get(key), floor)} / {ok(tru.get(key), floor)}"])
    n_loc = [lab.get("n_localization"), tru.get("n_localization")]
    rows.append(["n_localization (samples with exactly one bad region)", n_loc[0], n_loc[1], f">= {MIN_LOCALIZATION}",
                 " / ".join("pass" if (n or 0) >= MIN_LOCALIZATION else "FAIL" for n in n_loc)])
    return (["## Does the model work as a reward? (test split)", "",
             f"{c['n_samples']} held-out samples, {c['n_regions']} regions; sources never seen in training "
             "(perceptual split linking). Region SRCC = mean of the success and preserve Spearman "
             "correlations over all regions; localization AUROC over samples with exactly one region "
             "whose target min(success, preserve) < 12.5: P(that region's predicted score < another "
             "region's of the same sample).", ""]
            + _table(["metric", "vs aggregated labels", "vs ground truth", "required", "labels / truth"], rows) + [""])


def demo_report(ws: Workspace, cfg: Any, base_url: str, times: dict[str, float], batch_id: str) -> Path:
    wh = Warehouse.open(ws)
    now = dt.datetime.now(dt.timezone.utc)
    lines = [f"# SFReward demo report ({now:%Y-%m-%d %H:%M} UTC)", "",
             f"Workspace: `{ws.home}`  ", f"Batch: `{batch_id}` (synthetic edits of scikit-image photos; "
             "annotations by SIMULATED annotators, flagged `is_simulated` in the warehouse)", ""]
    lines += ["## Counts at each stage", ""] + _table(["stage", "count"], stage_counts(wh, batch_id)) + [""]

    ds = wh.query_dicts("SELECT * FROM dataset_versions ORDER BY created_at DESC LIMIT 1")
    if ds:
        d = ds[0]
        lines += ["## Dataset version", "", f"`{d['dataset_id']}`: {d['n_rows']} samples, {d['n_regions']} regions  ",
                  f"Splits: {d['split_counts']}  ", f"Exclusions: {d['exclusion_counts']}", ""]
        rid = d.get("agreement_report_id")
        alpha = wh.query("SELECT dimension, alpha, n_units, n_ratings FROM agreement_reports "
                         "WHERE report_id = ? AND scope = 'all' ORDER BY dimension", [rid]) if rid else []
        if alpha:
            lines += ["## Agreement (Krippendorff's alpha, ordinal)", ""]
            lines += _table(["dimension", "alpha", "units", "ratings"], [list(r) for r in alpha]) + [""]
            aq = wh.query("SELECT q.annotator_id, a.is_simulated, q.n_ratings, q.mae_vs_others, q.within1_others, "
                          "q.flagged, q.flag_reason FROM annotator_quality q LEFT JOIN annotators a "
                          "USING (annotator_id) WHERE report_id = ? ORDER BY q.mae_vs_others", [rid])
            if aq:
                lines += ["### Annotators", ""]
                lines += _table(["annotator", "simulated", "ratings", "MAE vs others (stars)",
                                 "within 1 star", "flagged", "why"], [list(r) for r in aq]) + [""]

    lines += annotator_throughput_section(wh)

    models = wh.query_dicts("SELECT m.model_id, m.dataset_id, m.n_params, e.metrics FROM models m "
                            "LEFT JOIN evaluations e ON e.model_id = m.model_id AND e.split = 'test' "
                            "ORDER BY m.created_at DESC LIMIT 1")
    if models:
        m = models[0]
        metrics = json.loads(m["metrics"] or "{}")
        lines += ["## Model", "", f"`{m['model_id']}` ({m['n_params']:,} parameters) trained on `{m['dataset_id']}`, "
                  "registered as `candidate`.", ""]
        flat = [[k, v] for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        lines += _table(["test metric", "value"], flat) + [""]

    lines += reward_check_lines(ws.reports / "heldout" / "reward_check.json")
    pic = ws.reports / "heldout" / "heldout_scores.png"
    if pic.exists():
        lines += ["## Held-out edits, regions colored by predicted score", "",
                  f"![held-out scores]({pic.relative_to(ws.reports).as_posix()})", "",
                  f"Per-sample scores: `{(ws.reports / 'heldout' / 'scores.json')}`", ""]

    lines += ["## Where to look next", "",
              f"- Label Studio: {base_url} — log in as the admin whose email and password are in "
              f"`{ws.labelstudio / 'credentials.json'}` (readable only by you). Project `{cfg.project_key}`.",
              f"- Dagster UI: `SFR_HOME={ws.home} DAGSTER_HOME={ws.dagster_home} .venv/bin/dagster dev -m pipelines "
              "-h 127.0.0.1 -p 3000`, then open http://127.0.0.1:3000 (the demo's runs are there).",
              f"- Warehouse: `{ws.warehouse_path}` (DuckDB); `.venv/bin/sfr --home {ws.home} status`.",
              f"- Stop Label Studio: `.venv/bin/sfr --home {ws.home} labelstudio down`.", "",
              "## Timings", ""] + _table(["stage", "seconds"], [[k, round(v, 1)] for k, v in times.items()])
    out = ws.reports / f"demo-{now:%Y%m%d-%H%M%S}.md"
    out.write_text("\n".join(lines) + "\n")
    (ws.reports / "latest.md").write_text("\n".join(lines) + "\n")
    return out
