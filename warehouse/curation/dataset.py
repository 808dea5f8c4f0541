"""Versioned datasets: `build_dataset(ws, config) -> DatasetVersion`.

One write transaction: agreement report, (optional) annotator exclusion, aggregation, filters,
stable splits, then the rows. The version id is 'sfr-' + sha256 of (rows hash, regions hash,
config hash), so building twice from the same warehouse state gives the same id and an
existing version is returned unchanged. Scores are stored on 0..25 (warehouse/scale.py: 1 star = 0,
5 stars = 25, applied to the rating statistic).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

import duckdb

from warehouse.curation.aggregate import aggregate_into_tables, prepare_current
from warehouse.curation.agreement import compute_agreement, record_agreement
from warehouse.curation.config import SPLITS, CurationConfig
from warehouse.curation.filters import apply_sample_filters, build_candidate_regions, ensure_hashes
from warehouse.curation.nearsource import ensure_source_hashes
from warehouse.curation.splits import assign_splits, resolve_linking
from warehouse.datasets import version_dir
from warehouse.db import Warehouse
from warehouse.scale import star_spread_to_reward_sql as spread_sql
from warehouse.scale import stars_to_reward_sql as reward_sql
from warehouse.workspace import Workspace

ROW_COLS = ["sample_id", "group_id", "source_sha256", "edited_sha256", "split", "instruction", "category",
            "editor", "overall", "naturalness", "artifacts", "n_annotators"]
REGION_COLS = ["sample_id", "region_id", "ord", "kind", "rle", "x1", "y1", "x2", "y2", "area", "success",
               "preserve", "success_std", "preserve_std", "n_annotators", "verdict", "mask_source"]


@dataclass
class DatasetVersion:
    dataset_id: str
    name: str
    config: dict
    n_rows: int
    n_regions: int
    split_counts: dict = field(default_factory=dict)
    exclusion_counts: dict = field(default_factory=dict)
    agreement: dict = field(default_factory=dict)
    agreement_report_id: str | None = None
    created_at: str | None = None
    timings_s: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _row_hash(con: duckdb.DuckDBPyConnection, table: str, cols: list[str], order: str) -> str:
    # NULL-safe, type-stable text of each row; md5 per row, then md5 of the ordered digests.
    parts = ", ".join(f"coalesce(CAST({c} AS VARCHAR), '\\N')" for c in cols)
    return con.execute(
        f"SELECT coalesce(md5(string_agg(h, '' ORDER BY {order})), md5('')) "
        f"FROM (SELECT {order}, md5(concat_ws(chr(31), {parts})) AS h FROM {table})").fetchone()[0]


def build_dataset(ws: Workspace, config: CurationConfig | None = None) -> DatasetVersion:
    """Curate the warehouse into a dataset version (recorded in `dataset_versions`)."""
    config = config or CurationConfig()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    wh, config = _prepare_hashes(ws, config)
    timings["hashes"] = time.perf_counter() - t0
    with wh.write() as con:
        report = _curate(con, config, timings)
        t = time.perf_counter()
        _dataset_tables(con, config.score_stat)
        dataset_id, rows_hash, regions_hash = _version_id(con, config)
        timings["rows"] = time.perf_counter() - t
        existing = con.execute("SELECT count(*) FROM dataset_versions WHERE dataset_id = ?", [dataset_id]).fetchone()[0]
        if not existing:
            t = time.perf_counter()
            _record_version(con, dataset_id, config, report, f"{rows_hash}:{regions_hash}")
            timings["record"] = time.perf_counter() - t
        t = time.perf_counter()
    timings["commit"] = time.perf_counter() - t     # commit and close: DuckDB writes and checkpoints
    version = get_version(wh, dataset_id)
    version.timings_s = {k: round(v, 3) for k, v in timings.items()}
    out = version_dir(ws, dataset_id)
    out.mkdir(parents=True, exist_ok=True)
    (out / "version.json").write_text(json.dumps({k: v for k, v in version.to_dict().items() if k != "timings_s"},
                                                 indent=2, sort_keys=True, default=str))
    return version


def _prepare_hashes(ws: Workspace, config: CurationConfig) -> tuple[Warehouse, CurationConfig]:
    """Fill the perceptual hashes the config needs (before the write transaction: they decode
    images) and resolve its split linking, which is recorded as part of the version's identity."""
    if config.dedupe_hamming >= 0:
        ensure_hashes(ws)
    wh = Warehouse.open(ws)
    with wh.read() as con:
        config = resolve_linking(con, config)
    if config.split_linking == "perceptual":
        ensure_source_hashes(ws)
    return wh, config


def _curate(con: duckdb.DuckDBPyConnection, config: CurationConfig, timings: dict[str, float]):
    """Inside the build's transaction: current ratings, agreement (recorded), annotator
    exclusion, aggregation, filters and splits, leaving the working tables `cand`,
    `cand_regions`, `sample_split`, `cur_agg_samples` and `excl` (warehouse/curation/README.md).
    Returns the agreement report."""
    t = time.perf_counter()
    prepare_current(con, config.project_keys, annotation_sources=config.annotation_sources,
                    default_ratings=config.default_ratings)
    report = compute_agreement(con, config)
    record_agreement(con, report)
    timings["agreement"] = time.perf_counter() - t
    t = time.perf_counter()
    excluded_annotators = report.flagged_annotators if config.exclude_flagged_annotators else []
    if excluded_annotators:
        prepare_current(con, config.project_keys, excluded_annotators, config.annotation_sources,
                        config.default_ratings)
    aggregate_into_tables(con, persist=False)   # the aggregated_labels asset persists them
    timings["aggregate"] = time.perf_counter() - t
    t = time.perf_counter()
    apply_sample_filters(con, config)
    # Reported, not silently dropped: prepare_current already left them out of `rated`.
    con.execute("INSERT INTO excl SELECT 'annotation', project_key || ':' || ls_annotation_id, "
                "'edited_by_other', 'last changed by ' || coalesce(updated_by, 'unknown') || "
                "', not by its author ' || annotator FROM cur_ann WHERE edited_by_other ORDER BY 2")
    for a in excluded_annotators:
        reason = next(x["flag_reason"] for x in report.annotators if x["annotator_id"] == a)
        con.execute("INSERT INTO excl VALUES ('annotator', ?, 'flagged_annotator', ?)", [a, reason])
    build_candidate_regions(con, config)
    timings["filters"] = time.perf_counter() - t
    t = time.perf_counter()
    assign_splits(con, config)
    timings["splits"] = time.perf_counter() - t
    return report


def _dataset_tables(con: duckdb.DuckDBPyConnection, stat: str) -> None:
    """Temp tables `ds_rows` and `ds_regions`: the version's rows (ROW_COLS, REGION_COLS) with
    the `stat` rating statistic mapped to the 0..25 reward scale (warehouse/scale.py)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ds_rows AS
        SELECT s.sample_id, s.group_id, s.source_sha256, s.edited_sha256, p.split, s.instruction,
               s.category, s.editor, {reward_sql(f'a.overall_{stat}')} AS overall,
               {reward_sql(f'a.naturalness_{stat}')} AS naturalness,
               {reward_sql(f'a.artifacts_{stat}')} AS artifacts,
               a.n_annotators
        FROM cand c JOIN samples s USING (sample_id) JOIN sample_split p USING (sample_id)
        JOIN cur_agg_samples a USING (sample_id)
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ds_regions AS
        SELECT sample_id, region_id,
               CAST(row_number() OVER (PARTITION BY sample_id ORDER BY kind = 'background', ord, region_id) - 1 AS INTEGER) AS ord,
               kind, rle, x1, y1, x2, y2, area,
               {reward_sql(f'success_{stat}')} AS success, {reward_sql(f'preserve_{stat}')} AS preserve,
               {spread_sql('success_std')} AS success_std, {spread_sql('preserve_std')} AS preserve_std,
               coalesce(n_annotators, 0) AS n_annotators, verdict, mask_source
        FROM cand_regions WHERE sample_id IN (SELECT sample_id FROM ds_rows)
    """)


def _version_id(con: duckdb.DuckDBPyConnection, config: CurationConfig) -> tuple[str, str, str]:
    """(dataset id, rows hash, regions hash): 'sfr-' + sha256 of the content and the config."""
    rows_hash = _row_hash(con, "ds_rows", ROW_COLS, "sample_id")
    regions_hash = _row_hash(con, "ds_regions", REGION_COLS, "sample_id, ord")
    digest = hashlib.sha256(f"{rows_hash}:{regions_hash}:{config.hash()}".encode()).hexdigest()
    return "sfr-" + digest[:16], rows_hash, regions_hash


def _record_version(con: duckdb.DuckDBPyConnection, dataset_id: str, config: CurationConfig, report,
                    rows_hash: str) -> None:
    """Copy ds_rows, ds_regions and excl into the dataset tables and record the version."""
    split_counts = dict(con.execute("SELECT split, count(*) FROM ds_rows GROUP BY split").fetchall())
    split_counts = {s: int(split_counts.get(s, 0)) for s in SPLITS}
    excl_counts = {f"{k}:{r}": int(n) for k, r, n in con.execute(
        "SELECT item_kind, reason, count(*) FROM excl GROUP BY ALL ORDER BY ALL").fetchall()}
    n_rows = int(con.execute("SELECT count(*) FROM ds_rows").fetchone()[0])
    n_regions = int(con.execute("SELECT count(*) FROM ds_regions").fetchone()[0])
    con.execute(f"INSERT INTO dataset_rows SELECT ?, {', '.join(ROW_COLS)} FROM ds_rows", [dataset_id])
    con.execute(f"INSERT INTO dataset_regions SELECT ?, {', '.join(REGION_COLS)} FROM ds_regions", [dataset_id])
    con.execute("INSERT INTO dataset_exclusions SELECT ?, * FROM excl", [dataset_id])
    con.execute(
        "INSERT INTO dataset_versions (dataset_id, name, config, config_hash, rows_hash, n_rows, n_regions, "
        "split_counts, exclusion_counts, agreement, agreement_report_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [dataset_id, config.name, config.to_json(), config.hash(), rows_hash,
         n_rows, n_regions, json.dumps(split_counts), json.dumps(excl_counts),
         json.dumps(report.summary(), sort_keys=True), report.report_id])


def _from_row(r: dict) -> DatasetVersion:
    return DatasetVersion(
        dataset_id=r["dataset_id"], name=r["name"], config=json.loads(r["config"]), n_rows=r["n_rows"],
        n_regions=r["n_regions"], split_counts=json.loads(r["split_counts"]),
        exclusion_counts=json.loads(r["exclusion_counts"]), agreement=json.loads(r["agreement"]),
        agreement_report_id=r["agreement_report_id"], created_at=str(r["created_at"]))


def get_version(ws: Workspace | Warehouse, dataset_id: str) -> DatasetVersion:
    wh = ws if isinstance(ws, Warehouse) else Warehouse.open(ws)
    rows = wh.query_dicts("SELECT * FROM dataset_versions WHERE dataset_id = ?", [dataset_id])
    if not rows:
        raise KeyError(f"dataset version {dataset_id!r} is not in the warehouse; see `sfr dataset list`")
    return _from_row(rows[0])


def list_versions(ws: Workspace) -> list[DatasetVersion]:
    rows = Warehouse.open(ws).query_dicts("SELECT * FROM dataset_versions ORDER BY created_at DESC, dataset_id")
    return [_from_row(r) for r in rows]


def label_scale_of(ws: Workspace | Warehouse, dataset_id: str | None) -> str | None:
    """The label scale (warehouse/scale.py) of a dataset version's scores: what it recorded, or
    the legacy scale for versions built before label scales were recorded; None when the version
    is unknown (e.g. a model registered without a dataset)."""
    from warehouse.scale import LEGACY_LABEL_SCALE
    if not dataset_id:
        return None
    try:
        return get_version(ws, dataset_id).config.get("label_scale", LEGACY_LABEL_SCALE)
    except KeyError:
        return None
