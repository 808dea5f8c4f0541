"""Per-annotator throughput: what an annotator costs and what their work is worth.

For every annotator with current (not deleted) annotations:
- `n_annotations`, `n_skipped` (cancelled);
- `median_lead_time_s`: Label Studio's `lead_time` (seconds the annotation was open in the
  editor) of the current versions; `tasks_per_hour` = 3600 / mean lead time (editor time
  only: breaks between tasks are not in it);
- `explicit_share`: the share of region ratings (success, preserve) the annotator clicked
  rather than left to a recorded default (annotation.config; NULL columns count as neither);
- agreement and gold accuracy from an agreement report (`annotator_quality`): MAE vs the
  other annotators and vs gold answers, in stars; the newest report unless one is given.
"""
from __future__ import annotations

from warehouse.db import Warehouse

COLUMNS = ["annotator_id", "email", "is_simulated", "n_annotations", "n_skipped", "median_lead_time_s",
           "tasks_per_hour", "explicit_share", "mae_vs_others", "within1_others", "n_gold", "mae_vs_gold"]

_SQL = """
WITH cur AS (
    SELECT a.annotator_id, a.was_cancelled, v.lead_time
    FROM annotations a JOIN annotation_versions v ON v.project_key = a.project_key
     AND v.ls_annotation_id = a.ls_annotation_id AND v.version = a.version
    WHERE NOT a.is_deleted AND a.annotator_id IS NOT NULL),
t AS (
    SELECT annotator_id, count(*) FILTER (WHERE NOT was_cancelled) AS n_annotations,
           count(*) FILTER (WHERE was_cancelled) AS n_skipped,
           median(lead_time) FILTER (WHERE NOT was_cancelled) AS median_lead_time_s,
           3600 / nullif(avg(lead_time) FILTER (WHERE NOT was_cancelled), 0) AS tasks_per_hour
    FROM cur GROUP BY annotator_id),
r AS (
    SELECT a.annotator_id,
           (count(ar.success) FILTER (WHERE NOT coalesce(ar.success_default, false))
            + count(ar.preserve) FILTER (WHERE NOT coalesce(ar.preserve_default, false)))
           / nullif(count(ar.success) + count(ar.preserve), 0) AS explicit_share
    FROM annotation_regions ar JOIN annotations a USING (project_key, ls_annotation_id)
    WHERE NOT a.is_deleted GROUP BY a.annotator_id),
q AS (SELECT * FROM annotator_quality WHERE report_id = ?)
SELECT t.annotator_id, u.email, u.is_simulated, t.n_annotations, t.n_skipped,
       round(t.median_lead_time_s, 1), round(t.tasks_per_hour, 1), round(r.explicit_share, 3),
       round(q.mae_vs_others, 3), round(q.within1_others, 3), coalesce(q.n_gold, 0), round(q.mae_vs_gold, 3)
FROM t LEFT JOIN annotators u USING (annotator_id) LEFT JOIN r USING (annotator_id)
LEFT JOIN q USING (annotator_id)
ORDER BY t.n_annotations DESC, t.annotator_id
"""


def annotator_throughput(wh: Warehouse, report_id: str | None = None) -> list[dict]:
    """One dict per annotator with the COLUMNS above (agreement/gold NULL without a report)."""
    if report_id is None:
        newest = wh.query("SELECT report_id FROM annotator_quality q JOIN agreement_reports r USING (report_id) "
                          "ORDER BY r.created_at DESC LIMIT 1")
        report_id = newest[0][0] if newest else None
    return [dict(zip(COLUMNS, row)) for row in wh.query(_SQL, [report_id])]


def throughput_markdown(rows: list[dict]) -> list[str]:
    """A markdown table (lines) of `annotator_throughput` rows."""
    head = ["annotator", "simulated", "annotations", "skipped", "median lead time (s)", "tasks / hour",
            "explicit ratings", "MAE vs others", "within 1 star", "gold tasks", "MAE vs gold"]
    keys = ["email", "is_simulated", "n_annotations", "n_skipped", "median_lead_time_s", "tasks_per_hour",
            "explicit_share", "mae_vs_others", "within1_others", "n_gold", "mae_vs_gold"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join("" if r[k] is None else str(r[k]) for k in keys) + " |")
    return out
