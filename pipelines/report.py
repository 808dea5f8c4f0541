"""The demo's closing report: counts at each stage, agreement, annotator quality, model
metrics, where the UIs are, and the held-out picture. Markdown under <home>/reports/.
Secrets stay out: the report names the credentials file instead of printing the password."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sfreward.registry import newest_model
from warehouse import stats as warehouse_stats
from warehouse.curation.agreement import alpha_table, annotator_quality_table
from warehouse.curation.dataset import get_version
from warehouse.datasets import version_ids
from warehouse.db import Warehouse
from warehouse.workspace import Workspace


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return out


def stage_counts(wh: Warehouse, batch_id: str) -> list[list[Any]]:
    c = warehouse_stats.stage_counts(wh, batch_id)
    return [
        ["samples ingested (batch)", c["samples"]],
        ["rows quarantined (batch)", c["quarantined"]],
        ["GRPO groups", c["groups"]],
        ["region sets / regions", f"{c['region_sets']} / {c['regions']}"],
        ["Label Studio tasks", c["tasks"]],
        ["annotators (simulated)", f"{c['annotators']} ({c['simulated_annotators']})"],
        ["annotation versions synced", c["annotation_versions"]],
        ["current annotations (valid / skipped)",
         f"{c['annotations']} ({c['valid_annotations']} / {c['cancelled_annotations']})"],
        ["annotated regions", c["annotated_regions"]],
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

    ids = version_ids(wh)   # newest first: the current dataset (warehouse.datasets)
    if ids:
        d = get_version(wh, ids[0])
        lines += ["## Dataset version", "", f"`{d.dataset_id}`: {d.n_rows} samples, {d.n_regions} regions  ",
                  f"Splits: {json.dumps(d.split_counts)}  ", f"Exclusions: {json.dumps(d.exclusion_counts)}", ""]
        rid = d.agreement_report_id
        alpha = alpha_table(wh, rid) if rid else []
        if alpha:
            lines += ["## Agreement (Krippendorff's alpha, ordinal)", ""]
            lines += _table(["dimension", "alpha", "units", "ratings"], [list(r) for r in alpha]) + [""]
            aq = annotator_quality_table(wh, rid)
            if aq:
                lines += ["### Annotators", ""]
                lines += _table(["annotator", "simulated", "ratings", "MAE vs others (stars)",
                                 "within 1 star", "flagged", "why"], [list(r) for r in aq]) + [""]

    lines += annotator_throughput_section(wh)

    m = newest_model(wh)
    if m:
        metrics = m["test_metrics"]
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
