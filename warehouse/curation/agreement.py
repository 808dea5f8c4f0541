"""Inter-annotator agreement and annotator quality (Label Studio Community has neither).

Krippendorff's alpha, ordinal (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"):
    o[c, k] = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1)      units with m_u >= 2 values
    n_c = sum_k o[c, k],  n = sum_c n_c
    delta2[c, k] = (sum_{g=c..k} n_g - (n_c + n_k) / 2) ** 2        ordinal metric
    alpha = 1 - (n - 1) * sum(o * delta2) / sum(outer(n_c, n_c) * delta2)
Computed from per-unit value counts N[U, V] (V = 5 star values), vectorized with numpy; grouped
alphas (per project, per batch) sum the per-unit coincidence contributions with bincount.

Annotator quality (stars): each annotator's ratings against the mean of the other annotators
on the same unit (leave-one-out) and against gold answers (`gold_answers`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import duckdb
import numpy as np

from warehouse.curation.config import IMAGE_DIMS, REGION_DIMS, CurationConfig
from warehouse.db import insert_rows

VALUES = np.arange(1, 6)


def ordinal_delta2(n_c: np.ndarray) -> np.ndarray:
    """Squared ordinal distances [V, V] from the value marginals n_c [V]."""
    cum = np.cumsum(n_c) - n_c / 2.0          # position of each value's mid-rank
    return (cum[None, :] - cum[:, None]) ** 2


def alpha_from_coincidence(o: np.ndarray) -> float:
    """Ordinal alpha from a coincidence matrix o [V, V]; NaN when undefined (n <= 1 or no
    expected disagreement, e.g. every value identical)."""
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return float("nan")
    d2 = ordinal_delta2(n_c)
    d_e = float((np.outer(n_c, n_c) * d2).sum())
    if d_e == 0:
        return float("nan")
    return float(1.0 - (n - 1) * float((o * d2).sum()) / d_e)


def coincidence_grouped(counts: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Coincidence matrices per group: counts [U, V] (value counts per unit), group [U] ints in
    [0, n_groups) -> [n_groups, V, V]. Units with fewer than 2 values contribute nothing."""
    counts = np.asarray(counts, dtype=np.float64)
    m = counts.sum(axis=1)
    keep = m >= 2
    counts, group, m = counts[keep], np.asarray(group)[keep], m[keep]
    w = counts / (m - 1)[:, None]
    v = counts.shape[1]
    out = np.zeros((n_groups, v, v))
    for c in range(v):
        for k in range(v):
            cell = w[:, c] * counts[:, k]
            if c == k:
                cell = cell - w[:, c]
            out[:, c, k] = np.bincount(group, weights=cell, minlength=n_groups)
    return out


def krippendorff_alpha_ordinal(reliability_data: np.ndarray, value_domain=VALUES) -> float:
    """alpha for a [raters, units] matrix with NaN for missing, values in `value_domain`."""
    data = np.asarray(reliability_data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"reliability_data must be [raters, units], got shape {data.shape}")
    domain = np.asarray(value_domain, dtype=np.float64)
    present = ~np.isnan(data)
    bad = present & ~np.isin(data, domain)
    if bad.any():
        raise ValueError(f"reliability_data has values outside the domain {domain.tolist()}: "
                         f"{np.unique(data[bad]).tolist()}")
    idx = np.searchsorted(domain, np.where(present, data, domain[0]))
    counts = np.zeros((data.shape[1], len(domain)))
    units = np.broadcast_to(np.arange(data.shape[1]), data.shape)
    np.add.at(counts, (units[present], idx[present]), 1)
    o = coincidence_grouped(counts, np.zeros(len(counts), dtype=np.int64), 1)[0]
    return alpha_from_coincidence(o)


@dataclass
class AgreementReport:
    report_id: str
    alphas: list[dict] = field(default_factory=list)       # scope, scope_key, dimension, alpha, n_units, n_ratings
    annotators: list[dict] = field(default_factory=list)   # annotator_quality rows
    flagged_annotators: list[str] = field(default_factory=list)

    def alpha(self, dimension: str, scope: str = "all", scope_key: str = "") -> float:
        for a in self.alphas:
            if (a["scope"], a["scope_key"], a["dimension"]) == (scope, scope_key, dimension):
                return a["alpha"]
        raise KeyError(f"no alpha for {scope}/{scope_key}/{dimension}")

    def summary(self) -> dict:
        overall = {a["dimension"]: a["alpha"] for a in self.alphas if a["scope"] == "all"}
        return {"report_id": self.report_id, "alpha": overall,
                "n_annotators": len(self.annotators), "flagged_annotators": self.flagged_annotators}


def _ratings_sql(dim: str) -> str:
    """Long ratings (scope keys, unit, annotator, value) for one dimension from cur_ann/cur_regions."""
    if dim in IMAGE_DIMS:
        return f"""SELECT c.project_key, s.batch_id, c.sample_id, '' AS region_id, c.annotator,
                          c.{dim} AS value
                   FROM cur_ann c JOIN samples s USING (sample_id)
                   WHERE c.rated AND c.{dim} BETWEEN 1 AND 5"""
    return f"""SELECT r.project_key, s.batch_id, r.sample_id, r.region_id, r.annotator, r.{dim} AS value
               FROM cur_regions r JOIN samples s USING (sample_id)
               WHERE NOT r.is_drawn AND r.{dim} BETWEEN 1 AND 5"""


def _wide_sql(dims: tuple[str, ...]) -> str:
    """One row per (annotator, unit) with every dimension of one source as a column (NULL when
    missing or outside 1..5): image dims from cur_ann, region dims from cur_regions."""
    cols = ", ".join(f"CASE WHEN x.{d} BETWEEN 1 AND 5 THEN x.{d} END AS {d}" for d in dims)
    if dims == IMAGE_DIMS:
        return f"""SELECT x.project_key, s.batch_id, x.sample_id, '' AS region_id, x.annotator, {cols}
                   FROM cur_ann x JOIN samples s USING (sample_id) WHERE x.rated"""
    return f"""SELECT x.project_key, s.batch_id, x.sample_id, x.region_id, x.annotator, {cols}
               FROM cur_regions x JOIN samples s USING (sample_id) WHERE NOT x.is_drawn"""


def _nan_none(x: float | None) -> float | None:
    # Rounded: parallel float sums differ in the last bits between runs; 12 decimals keep the
    # figures (and the content-hash report id) identical while staying far below 1e-9.
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), 12)


def _alphas(con: duckdb.DuckDBPyConnection, dims: tuple[str, ...]) -> list[dict]:
    """Alphas of `dims` (one source) for scopes all / project / batch. Units are (project, sample,
    region): pairs are only formed within one project. The coincidence matrix is a sum over
    units, so SQL sums each unit's contribution per (project, batch) in one pass over the
    ratings and numpy only adds those few partial matrices per scope."""
    counts = ", ".join([f"count(*) FILTER ({d} = {v}) AS {d}_c{v}" for d in dims for v in VALUES]
                       + [f"count({d}) AS {d}_m" for d in dims])
    cells = ", ".join(
        f"sum({d}_c{c} * {f'({d}_c{k} - 1)' if c == k else f'{d}_c{k}'} / ({d}_m - 1.0)) FILTER ({d}_m >= 2)"
        for d in dims for c in VALUES for k in VALUES)
    tallies = ", ".join(f"count(*) FILTER ({d}_m >= 2), sum({d}_m)" for d in dims)
    res = con.execute(f"""
        WITH u AS (SELECT project_key, batch_id, {counts} FROM ({_wide_sql(dims)})
                   GROUP BY project_key, batch_id, sample_id, region_id)
        SELECT project_key, batch_id, {tallies}, {cells}
        FROM u GROUP BY project_key, batch_id ORDER BY project_key, batch_id
    """).fetchall()
    v2, out = len(VALUES) ** 2, []
    for j, dim in enumerate(dims):
        parts = []
        for r in res:
            o = r[2 + 2 * len(dims) + j * v2: 2 + 2 * len(dims) + (j + 1) * v2]
            parts.append((str(r[0]), str(r[1]), int(r[2 + 2 * j] or 0), int(r[3 + 2 * j] or 0),
                          np.array([0.0 if x is None else float(x) for x in o]).reshape(len(VALUES), len(VALUES))))
        for scope, pos in (("all", None), ("project", 0), ("batch", 1)):
            groups: dict[str, list] = {"": []} if pos is None else {}
            for p in parts:
                groups.setdefault("" if pos is None else p[pos], []).append(p)
            for key in sorted(groups):
                ps = groups[key]
                o = np.sum([p[4] for p in ps], axis=0) if ps else np.zeros((len(VALUES), len(VALUES)))
                out.append({"scope": scope, "scope_key": key, "dimension": dim,
                            "alpha": _nan_none(alpha_from_coincidence(o)),
                            "n_units": sum(p[2] for p in ps), "n_ratings": sum(p[3] for p in ps)})
    return out


def compute_agreement(con: duckdb.DuckDBPyConnection, config: CurationConfig) -> AgreementReport:
    """Alphas per dimension (all / per project / per batch) and annotator quality, from the temp
    tables made by aggregate.prepare_current. Writes nothing."""
    alphas = _alphas(con, IMAGE_DIMS) + _alphas(con, REGION_DIMS)
    order = {d: i for i, d in enumerate(IMAGE_DIMS + REGION_DIMS)}
    alphas.sort(key=lambda a: (order[a["dimension"]], ["all", "project", "batch"].index(a["scope"]), a["scope_key"]))

    # Leave-one-out deviation from the others' mean on the same unit: one window per source
    # (all its dimensions at once), then a streaming aggregate per annotator.
    win_i = ", ".join(f"sum({d}) OVER u AS {d}_s, count({d}) OVER u AS {d}_n" for d in IMAGE_DIMS)
    win_r = ", ".join(f"sum({d}) OVER u AS {d}_s, count({d}) OVER u AS {d}_n" for d in REGION_DIMS)
    part = "WINDOW u AS (PARTITION BY project_key, sample_id, region_id)"
    dev_sql = " UNION ALL ".join(
        [f"SELECT annotator, {d}_n AS n, abs({d} - ({d}_s - {d}) / nullif({d}_n - 1, 0)) AS dev FROM wi "
         f"WHERE {d} IS NOT NULL" for d in IMAGE_DIMS]
        + [f"SELECT annotator, {d}_n AS n, abs({d} - ({d}_s - {d}) / nullif({d}_n - 1, 0)) AS dev FROM wr "
           f"WHERE {d} IS NOT NULL" for d in REGION_DIMS])
    gold_union = " UNION ALL ".join(
        f"SELECT r.annotator, r.value - g.rating AS err FROM ({_ratings_sql(d)}) r "
        f"JOIN gs g ON g.sample_id = r.sample_id AND g.region_id = r.region_id AND g.dimension = '{d}'"
        for d in IMAGE_DIMS + REGION_DIMS)
    rows = con.execute(f"""
        WITH wi AS MATERIALIZED (SELECT annotator, {', '.join(IMAGE_DIMS)}, {win_i} FROM ({_wide_sql(IMAGE_DIMS)}) {part}),
        wr AS MATERIALIZED (SELECT annotator, {', '.join(REGION_DIMS)}, {win_r} FROM ({_wide_sql(REGION_DIMS)}) {part}),
        others AS (SELECT annotator, count(*) AS n_ratings, count(*) FILTER (n > 1) AS n_shared,
                          avg(dev) FILTER (n > 1) AS mae,
                          avg(CASE WHEN dev <= 1 THEN 1.0 ELSE 0.0 END) FILTER (n > 1) AS w1
                   FROM ({dev_sql}) GROUP BY annotator),
        gs AS (SELECT * FROM gold_answers WHERE sample_id IN (SELECT sample_id FROM tasks WHERE is_gold)),
        gold AS (SELECT annotator, count(*) AS n_gold, avg(abs(err)) AS mae,
                        avg(CASE WHEN abs(err) <= 1 THEN 1.0 ELSE 0.0 END) AS w1
                 FROM ({gold_union}) GROUP BY annotator)
        SELECT o.annotator, o.n_ratings, o.n_shared, o.mae, o.w1, coalesce(g.n_gold, 0), g.mae, g.w1
        FROM others o LEFT JOIN gold g USING (annotator) ORDER BY o.annotator
    """).fetchall()
    annotators, flagged = [], []
    for a, n_ratings, n_shared, mae_o, w1_o, n_gold, mae_g, w1_g in rows:
        reasons = []
        if n_gold >= config.min_gold and w1_g is not None and w1_g < config.gold_floor:
            reasons.append(f"gold within-1 {w1_g:.2f} < {config.gold_floor}")
        if n_shared >= config.min_shared and w1_o is not None and w1_o < config.others_floor:
            reasons.append(f"agreement with others within-1 {w1_o:.2f} < {config.others_floor}")
        if reasons:
            flagged.append(a)
        annotators.append({"annotator_id": a, "n_ratings": int(n_ratings), "n_shared": int(n_shared),
                           "mae_vs_others": _nan_none(mae_o), "within1_others": _nan_none(w1_o),
                           "n_gold": int(n_gold), "mae_vs_gold": _nan_none(mae_g),
                           "within1_gold": _nan_none(w1_g), "flagged": bool(reasons),
                           "flag_reason": "; ".join(reasons) or None})
    body = json.dumps({"alphas": alphas, "annotators": annotators}, sort_keys=True)
    report_id = "agr-" + hashlib.sha256(body.encode()).hexdigest()[:16]
    return AgreementReport(report_id, alphas, annotators, flagged)


def record_agreement(con: duckdb.DuckDBPyConnection, report: AgreementReport) -> None:
    """Store a report (idempotent: the id is a content hash)."""
    # fetchall, not fetchone: an unfinished result blocks the next statement on this connection
    if con.execute("SELECT count(*) FROM agreement_reports WHERE report_id = ?", [report.report_id]).fetchall()[0][0]:
        return
    insert_rows(con, "agreement_reports",
                ["report_id", "scope", "scope_key", "dimension", "alpha", "n_units", "n_ratings"],
                [(report.report_id, a["scope"], a["scope_key"], a["dimension"], a["alpha"], a["n_units"],
                  a["n_ratings"]) for a in report.alphas])
    cols = ["annotator_id", "n_ratings", "n_shared", "mae_vs_others", "within1_others", "n_gold", "mae_vs_gold",
            "within1_gold", "flagged", "flag_reason"]
    insert_rows(con, "annotator_quality", ["report_id", *cols],
                [(report.report_id, *(a[c] for c in cols)) for a in report.annotators])


def alpha_table(wh, report_id: str) -> list[tuple]:
    """(dimension, alpha, n_units, n_ratings) over all annotations of a recorded report."""
    return wh.query("SELECT dimension, alpha, n_units, n_ratings FROM agreement_reports "
                    "WHERE report_id = ? AND scope = 'all' ORDER BY dimension", [report_id])


def annotator_quality_table(wh, report_id: str) -> list[tuple]:
    """(annotator_id, is_simulated, n_ratings, mae_vs_others, within1_others, flagged,
    flag_reason) of a recorded report, best agreement (lowest MAE, in stars) first."""
    return wh.query("SELECT q.annotator_id, a.is_simulated, q.n_ratings, q.mae_vs_others, q.within1_others, "
                    "q.flagged, q.flag_reason FROM annotator_quality q LEFT JOIN annotators a "
                    "USING (annotator_id) WHERE report_id = ? ORDER BY q.mae_vs_others", [report_id])


def report_to_dict(report: AgreementReport) -> dict:
    return asdict(report)


def agreement_report(ws, config: CurationConfig | None = None) -> AgreementReport:
    """Compute and record the agreement report over the current annotations (plain function for
    the `agreement_report` asset; `build_dataset` computes the same inside its transaction)."""
    from warehouse.curation.aggregate import prepare_current
    from warehouse.db import Warehouse

    config = config or CurationConfig()
    with Warehouse.open(ws).write() as con:
        prepare_current(con, config.project_keys, annotation_sources=config.annotation_sources,
                        default_ratings=config.default_ratings)
        report = compute_agreement(con, config)
        record_agreement(con, report)
    return report
