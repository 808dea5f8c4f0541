"""Label aggregation in SQL: per region and per image, combine the annotators' ratings.

Ratings stay on the 1..5 star scale in `agg_regions` / `agg_samples`; exports map them to
0..25 (score = warehouse.scale.stars_to_reward(rating)). For each dimension we keep the count of ratings, the mean, the
median (ordinal-aware; with an even count DuckDB's median interpolates, so ratings 3 and 4
give 3.5) and the population std (the spread among the annotators who rated it; 0 for one
rating). Missing ratings (NULL) are not counted in that dimension. Every statistic is computed
from exact integer sums so that it is bit-identical from run to run (dataset ids hash them).

Which annotations count: the current version (`annotations`), not deleted, one per annotator
and sample (the latest), not skipped (was_cancelled), valid, and last changed by its own author
(`edited_by_other` false: in Label Studio Community any member can edit anyone's annotation);
region ratings must be valid too.
Default-filled ratings (migration 010: the annotator answered e.g. "everything outside the edit
preserved? yes" and the rating was filled in for them) count like clicked ones with
`default_ratings='count'`; with 'ignore' `prepare_current` nulls them, so every statistic,
vote and agreement downstream treats them as missing. The flags stay in `cur_ann` /
`cur_regions` (`artifacts_default`, `success_default`, `preserve_default`, `verdict_default`).
Proposal regions aggregate by `region_id`; regions drawn by an annotator (region_id NULL) have
no counterpart in other annotations and become their own region 'drawn:<project>:<id>:<key>'.
"""
from __future__ import annotations

from typing import Iterable

import duckdb

from warehouse.curation.config import DEFAULT_RATINGS
from warehouse.db import Warehouse, insert_rows
from warehouse.workspace import Workspace


def prepare_current(con: duckdb.DuckDBPyConnection, project_keys: Iterable[str] = (),
                    exclude_annotators: Iterable[str] = (), annotation_sources: Iterable[str] = (),
                    default_ratings: str = "count") -> None:
    """Temp table `cur_ann`: one current annotation per (sample, annotator) with flags
    `rated` (valid, not skipped, not edited by someone other than its author) and `usable` (rated
    and the annotator not excluded); temp table `cur_regions`: their valid region ratings.
    `annotation_sources` ('sync', 'imported'; empty = all) keeps only annotations of those sources.
    `default_ratings` ('count' or 'ignore', CurationConfig.default_ratings): with 'ignore',
    ratings flagged as default-filled are NULL in both tables."""
    if default_ratings not in DEFAULT_RATINGS:
        raise ValueError(f"prepare_current: default_ratings must be one of {DEFAULT_RATINGS}, got {default_ratings!r}")
    ignore = default_ratings == "ignore"

    def rating(col: str, flag: str) -> str:
        # NULL flags (rows from before migration 010) mean clicked.
        return f"CASE WHEN coalesce({flag}, false) THEN NULL ELSE {col} END" if ignore else col
    keys = sorted(set(project_keys))
    con.execute("CREATE OR REPLACE TEMP TABLE excluded_annotators (annotator_id TEXT)")
    ex = sorted(set(exclude_annotators))
    if ex:
        insert_rows(con, "excluded_annotators", ["annotator_id"], [(a,) for a in ex])
    where = "NOT a.is_deleted"
    params: list = []
    if keys:
        where += f" AND a.project_key IN ({', '.join('?' for _ in keys)})"
        params += keys
    sources = sorted(set(annotation_sources))
    if sources:
        where += f" AND coalesce(a.source, 'sync') IN ({', '.join('?' for _ in sources)})"
        params += sources
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE cur_ann AS
        SELECT a.project_key, a.ls_annotation_id, a.task_key, a.sample_id,
               coalesce(a.annotator_id, 'anon:' || a.project_key || ':' || a.ls_annotation_id) AS annotator,
               a.was_cancelled, a.valid, a.overall, a.naturalness,
               {rating('a.artifacts', 'a.artifacts_default')} AS artifacts,
               coalesce(a.artifacts_default, false) AS artifacts_default,
               coalesce(a.edited_by_other, false) AS edited_by_other, a.updated_by,
               (a.valid AND NOT a.was_cancelled AND NOT coalesce(a.edited_by_other, false)) AS rated,
               (a.valid AND NOT a.was_cancelled AND NOT coalesce(a.edited_by_other, false)
                AND coalesce(a.annotator_id, '') NOT IN (SELECT annotator_id FROM excluded_annotators)) AS usable
        FROM annotations a
        WHERE {where}
        QUALIFY row_number() OVER (
            PARTITION BY a.sample_id, coalesce(a.annotator_id, 'anon:' || a.project_key || ':' || a.ls_annotation_id)
            ORDER BY a.updated_at DESC NULLS LAST, a.version DESC, a.ls_annotation_id DESC) = 1
    """, params)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE cur_regions AS
        SELECT c.project_key, c.sample_id, c.annotator, c.usable,
               coalesce(r.region_id, 'drawn:' || r.project_key || ':' || r.ls_annotation_id || ':' || r.region_key) AS region_id,
               r.region_id IS NULL AS is_drawn,
               {rating('r.success', 'r.success_default')} AS success,
               {rating('r.preserve', 'r.preserve_default')} AS preserve,
               {rating('r.verdict', 'r.verdict_default')} AS verdict, r.rle,
               coalesce(r.success_default, false) AS success_default,
               coalesce(r.preserve_default, false) AS preserve_default,
               coalesce(r.verdict_default, false) AS verdict_default
        FROM cur_ann c
        JOIN annotation_regions r ON r.project_key = c.project_key AND r.ls_annotation_id = c.ls_annotation_id
        WHERE c.rated AND r.valid
    """)


def _stats(col: str, cond: str) -> str:
    # Population std from exact integer sums: DuckDB's parallel stddev_pop merges partial
    # states in thread order, so its last bits vary run to run and would change dataset ids.
    n = f"count({col}) FILTER ({cond})"
    mean = f"(sum({col}) FILTER ({cond}) / {n})"
    sq = f"(sum({col} * {col}) FILTER ({cond}) / {n})"
    return (f"avg({col}) FILTER ({cond}) AS {col}_mean, "
            f"median({col}) FILTER ({cond}) AS {col}_median, "
            f"sqrt(greatest({sq} - {mean} * {mean}, 0)) AS {col}_std")


def aggregate_into_tables(con: duckdb.DuckDBPyConnection, persist: bool = True) -> dict[str, int]:
    """Aggregate `cur_ann` / `cur_regions` (prepare first) into temp tables `cur_agg_samples` /
    `cur_agg_regions` (same columns as `agg_samples` / `agg_regions`); with `persist`, also
    replace the contents of those warehouse tables."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE cur_agg_samples AS
        SELECT sample_id,
               count(*) AS n_annotations,
               count(*) FILTER (was_cancelled) AS n_skipped,
               count(*) FILTER (NOT was_cancelled AND NOT valid) AS n_invalid,
               count(*) FILTER (usable) AS n_annotators,
               count(*) FILTER (usable AND overall IS NOT NULL AND naturalness IS NOT NULL
                                AND artifacts IS NOT NULL) AS n_complete,
               {_stats('overall', 'usable')},
               {_stats('naturalness', 'usable')},
               {_stats('artifacts', 'usable')}
        FROM cur_ann GROUP BY sample_id
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE cur_agg_regions AS
        WITH u AS (SELECT * FROM cur_regions WHERE usable),
        stats AS (
            SELECT sample_id, region_id, bool_or(is_drawn) AS is_drawn,
                   count(DISTINCT annotator) AS n_annotators,
                   count(success) AS success_n, {_stats('success', 'true')},
                   count(preserve) AS preserve_n, {_stats('preserve', 'true')}
            FROM u GROUP BY sample_id, region_id),
        verdicts AS (
            SELECT sample_id, region_id, verdict FROM (
                SELECT sample_id, region_id, verdict, count(*) AS n FROM u
                WHERE verdict IS NOT NULL GROUP BY ALL)
            QUALIFY row_number() OVER (PARTITION BY sample_id, region_id ORDER BY n DESC, verdict) = 1)
        SELECT s.sample_id, s.region_id, s.is_drawn, s.n_annotators,
               s.success_n, s.success_mean, s.success_median, s.success_std,
               s.preserve_n, s.preserve_mean, s.preserve_median, s.preserve_std, v.verdict
        FROM stats s LEFT JOIN verdicts v USING (sample_id, region_id)
    """)
    if persist:
        for t in ("agg_samples", "agg_regions"):
            con.execute(f"DELETE FROM {t}")
            con.execute(f"INSERT INTO {t} SELECT * FROM cur_{t}")
    n_s = con.execute("SELECT count(*) FROM cur_agg_samples").fetchone()[0]
    n_r = con.execute("SELECT count(*) FROM cur_agg_regions").fetchone()[0]
    return {"samples": int(n_s), "regions": int(n_r)}


def aggregate(ws: Workspace, project_keys: Iterable[str] = (),
              exclude_annotators: Iterable[str] = ()) -> dict[str, int]:
    """Recompute the aggregated label tables; returns {"samples": n, "regions": n}."""
    wh = Warehouse.open(ws)
    with wh.write() as con:
        prepare_current(con, project_keys, exclude_annotators)
        return aggregate_into_tables(con)
