"""Filters and dedupe. Every exclusion becomes a row (item_kind, item_id, reason, detail) in the
temp table `excl`; dataset.py stores them per version and counts them by reason.

Sample reasons, first match wins (so the counts add up to the number of samples excluded):
  not_annotated, skipped (every annotation skipped), all_invalid (annotations exist, none valid),
  incomplete (< min_annotators complete annotations), gold (include_gold off),
  low_agreement (std of overall > max_item_std), near_duplicate (dHash of the edited image
  within dedupe_hamming bits of a kept sample's), no_regions (every region filtered out),
  split_conflict (see splits.py).
Region reasons: small_region (area < min_region_area, background exempt), unrated_region,
  low_agreement_region (success or preserve std > max_region_std), bad_drawn_region.
Annotator reason: flagged_annotator (when exclude_flagged_annotators).
"""
from __future__ import annotations

import io
import logging

import duckdb
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from warehouse.curation.config import CurationConfig
from warehouse.curation.consensus import apply_mask_consensus
from warehouse.db import Warehouse, insert_rows
from warehouse.imagestore import LocalImageStore
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)


def dhash(image: Image.Image | bytes, size: int = 8) -> int:
    """Difference hash: grayscale, resize to (size+1) x size, one bit per horizontally adjacent
    pixel pair (left < right). Returns a signed 64-bit int (DuckDB BIGINT) for size 8."""
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    g = np.asarray(image.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= (1 << 63) else value


# Perceptual hashes of sources (split linking, warehouse/curation/nearsource.py): the same
# difference hash at 16 x 16 = 256 bits, of several centre crops and of the 8 dihedral variants
# (4 quarter turns x mirror), so that flips, 90-degree turns and a crop of most of the photo
# meet the original at the same scale and orientation.
SOURCE_HASH_SIZE = 16
SOURCE_CROPS = (100, 90, 80)      # centre crop, percent of each side
_THUMB = 64                       # variants are taken on a grey thumbnail (cheap, same bits)


def _bits_to_words(bits: np.ndarray) -> list[int]:
    """Bits (bool [n*64]) -> n signed 64-bit ints (DuckDB BIGINT), most significant first."""
    words = []
    for chunk in bits.reshape(-1, 64):
        value = int("".join("1" if b else "0" for b in chunk), 2)
        words.append(value - (1 << 64) if value >= (1 << 63) else value)
    return words


def dihedral_dhashes(image: Image.Image | bytes, crops: tuple[int, ...] = SOURCE_CROPS,
                     size: int = SOURCE_HASH_SIZE) -> list[tuple[int, int, list[int]]]:
    """[(crop percent, variant, words)] of an image: for each centre crop (percent of width and
    height) and each dihedral variant (variant = 4 * mirrored + quarter turns), the dHash with
    size*size bits as size*size/64 signed 64-bit words. (crop 100, variant 0) is the image as is."""
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    grey = image.convert("L")
    w, h = grey.size
    out = []
    for pct in crops:
        cw, ch = w * pct / 100, h * pct / 100
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        thumb = np.asarray(grey.resize((_THUMB, _THUMB), Image.Resampling.LANCZOS, box=box), dtype=np.float32)
        for variant in range(8):
            v = np.rot90(thumb[:, ::-1] if variant >= 4 else thumb, variant % 4)
            g = np.asarray(Image.fromarray(np.ascontiguousarray(v)).resize((size + 1, size),
                                                                          Image.Resampling.BILINEAR))
            out.append((pct, variant, _bits_to_words((g[:, 1:] > g[:, :-1]).flatten())))
    return out


def hamming(a: int, b: int) -> int:
    return bin((a ^ b) & ((1 << 64) - 1)).count("1")


def ensure_hashes(ws: Workspace) -> dict[str, int]:
    """Compute dHash for every edited image that has none yet (cached in `image_hashes`).
    An unreadable image is logged and skipped, never fails the batch."""
    wh = Warehouse.open(ws)
    todo = [r[0] for r in wh.query(
        "SELECT DISTINCT edited_sha256 FROM samples WHERE edited_sha256 NOT IN (SELECT sha256 FROM image_hashes)")]
    store = LocalImageStore(ws)
    rows, failed = [], 0
    for sha in todo:
        try:
            rows.append([sha, dhash(store.get(sha))])
        except Exception as e:  # missing file, truncated bytes, unknown format
            failed += 1
            log.warning("cannot hash edited image %s: %s", sha, e)
    if rows:
        with wh.write() as con:
            insert_rows(con, "image_hashes", ["sha256", "dhash"], rows, "ON CONFLICT DO NOTHING")
    return {"hashed": len(rows), "failed": failed}


def _exclude(con: duckdb.DuckDBPyConnection, kind: str, select_sql: str, params: list | None = None) -> None:
    """Insert (item_id, reason, detail) rows produced by `select_sql` as exclusions of `kind`."""
    con.execute(f"INSERT INTO excl SELECT '{kind}', * FROM ({select_sql})", params or [])


def apply_sample_filters(con: duckdb.DuckDBPyConnection, config: CurationConfig) -> None:
    """Create temp `excl` and `cand` (samples still in) from cur_agg_samples; near-duplicates last."""
    con.execute("CREATE OR REPLACE TEMP TABLE excl (item_kind TEXT, item_id TEXT, reason TEXT, detail TEXT)")
    con.execute("CREATE OR REPLACE TEMP TABLE cand AS SELECT sample_id FROM samples")
    rules = [
        ("not_annotated", "a.sample_id IS NULL", "NULL"),
        ("skipped", "a.n_skipped = a.n_annotations", "a.n_skipped || ' skipped'"),
        ("all_invalid", "a.n_annotators = 0 AND a.n_invalid > 0",
         "a.n_invalid || ' invalid of ' || a.n_annotations"),
        ("incomplete", f"a.n_complete < {int(config.min_annotators)}",
         f"a.n_complete || ' complete < {int(config.min_annotators)}'"),
        ("low_agreement", f"a.overall_std > {float(config.max_item_std)}",
         f"'overall std ' || round(a.overall_std, 3) || ' > {config.max_item_std}'"),
    ]
    if not config.include_gold:
        rules.insert(4, ("gold", "s.sample_id IN (SELECT sample_id FROM tasks WHERE is_gold)", "NULL"))
    for reason, cond, detail in rules:
        _exclude(con, "sample", f"""
            SELECT s.sample_id, '{reason}', {detail} FROM cand s
            LEFT JOIN cur_agg_samples a USING (sample_id) WHERE {cond}""")
        con.execute("DELETE FROM cand WHERE sample_id IN (SELECT item_id FROM excl WHERE item_kind = 'sample')")
    if config.dedupe_hamming >= 0:
        _near_duplicates(con, config.dedupe_hamming)
        con.execute("DELETE FROM cand WHERE sample_id IN (SELECT item_id FROM excl WHERE item_kind = 'sample')")


def _near_duplicates(con: duckdb.DuckDBPyConnection, k: int) -> None:
    """Cluster candidate samples whose edited images' dHashes differ in <= k bits; keep one per
    cluster (most annotators, then smallest sample_id). Rollouts of the same GRPO group are never
    duplicates of each other: they share a source and differ only where the edit acted, which is
    exactly what within-group ranking learns from. Samples with different instructions are not
    duplicates either (the same untouched image is a missed edit for two different requests). Pigeonhole: two 64-bit hashes within k
    bits agree exactly on at least one of k+1 bands, so candidate pairs come from band joins."""
    bands = k + 1
    width = -(-64 // bands)
    band_cols = ", ".join(
        f"(h.dhash >> {b * width}) & {(1 << min(width, 64 - b * width)) - 1} AS b{b}" for b in range(bands))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dh AS
        SELECT c.sample_id, s.group_id, lower(trim(s.instruction)) AS instr, h.dhash,
               coalesce(a.n_annotators, 0) AS n_ann, {band_cols}
        FROM cand c JOIN samples s USING (sample_id) JOIN image_hashes h ON h.sha256 = s.edited_sha256
        LEFT JOIN cur_agg_samples a ON a.sample_id = c.sample_id
    """)
    pair_sql = " UNION ".join(
        f"SELECT x.sample_id AS a, y.sample_id AS b FROM dh x JOIN dh y ON x.b{b} = y.b{b} "
        f"AND x.sample_id < y.sample_id AND x.group_id <> y.group_id AND x.instr = y.instr "
        f"WHERE bit_count(xor(x.dhash, y.dhash)) <= {k}" for b in range(bands))
    pairs = con.execute(pair_sql).fetchall()
    if not pairs:
        return
    ids = sorted({p for pair in pairs for p in pair})
    pos = {s: i for i, s in enumerate(ids)}
    ai = np.array([pos[a] for a, _ in pairs])
    bi = np.array([pos[b] for _, b in pairs])
    graph = coo_matrix((np.ones(len(pairs)), (ai, bi)), shape=(len(ids), len(ids)))
    _, labels = connected_components(graph, directed=False)
    n_ann = dict(con.execute("SELECT sample_id, n_ann FROM dh").fetchall())
    clusters: dict[int, list[str]] = {}
    for s, lab in zip(ids, labels):
        clusters.setdefault(int(lab), []).append(s)
    rows = []
    for members in clusters.values():
        keep = min(members, key=lambda s: (-n_ann[s], s))
        rows += [[s, "near_duplicate", f"near-duplicate of {keep}"] for s in members if s != keep]
    insert_rows(con, "excl", ["item_kind", "item_id", "reason", "detail"], [("sample", *r) for r in rows])


def build_candidate_regions(con: duckdb.DuckDBPyConnection, config: CurationConfig) -> None:
    """Temp `cand_regions`: for each candidate sample, the regions of its region set (proposals,
    with the annotators' mask corrections applied) plus annotator-drawn regions, with
    aggregates; filtered regions go to `excl`."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE sample_rs AS
        WITH t AS (SELECT sample_id, max(region_set_id) AS rs FROM tasks GROUP BY sample_id),
             g AS (SELECT group_id, max(region_set_id) AS rs FROM region_sets GROUP BY group_id)
        SELECT c.sample_id, coalesce(t.rs, g.rs) AS region_set_id
        FROM cand c JOIN samples s USING (sample_id)
        LEFT JOIN t USING (sample_id) LEFT JOIN g ON g.group_id = s.group_id
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE all_regions AS
        SELECT p.sample_id, r.region_id, r.idx AS ord, r.kind, r.rle, r.x1, r.y1, r.x2, r.y2, r.area,
               'proposal' AS mask_source
        FROM sample_rs p JOIN regions r ON r.region_set_id = p.region_set_id
        UNION ALL
        SELECT cr.sample_id, cr.region_id, 100000 + row_number() OVER (PARTITION BY cr.sample_id ORDER BY cr.region_id),
               ar.kind, ar.rle, ar.x1, ar.y1, ar.x2, ar.y2, ar.area, 'drawn'
        FROM (SELECT DISTINCT sample_id, region_id, project_key FROM cur_regions WHERE is_drawn AND usable) cr
        JOIN cand USING (sample_id)
        JOIN annotation_regions ar
          ON cr.region_id = 'drawn:' || ar.project_key || ':' || ar.ls_annotation_id || ':' || ar.region_key
    """)
    # Annotators' fixes of prefilled masks replace the proposal masks (warehouse.curation.consensus).
    apply_mask_consensus(con)
    _exclude(con, "region", "SELECT sample_id || '/' || region_id, 'empty_consensus_mask', detail "
                            "FROM empty_consensus")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE cand_regions AS
        SELECT r.*, g.n_annotators, g.success_n, g.success_mean, g.success_median, g.success_std,
               g.preserve_n, g.preserve_mean, g.preserve_median, g.preserve_std, g.verdict
        FROM all_regions r LEFT JOIN cur_agg_regions g USING (sample_id, region_id)
    """)
    k = "sample_id || '/' || region_id"
    region_rules = [
        ("bad_drawn_region", "region_id LIKE 'drawn:%' AND (rle IS NULL OR x1 IS NULL OR area IS NULL OR kind IS NULL)",
         "'drawn region without mask, box, area or kind'"),
        ("small_region", f"kind <> 'background' AND area < {int(config.min_region_area)}",
         f"'area ' || area || ' < {int(config.min_region_area)}'"),
        ("unrated_region", "coalesce(success_n, 0) + coalesce(preserve_n, 0) = 0", "NULL"),
        ("low_agreement_region",
         f"greatest(coalesce(success_std, 0), coalesce(preserve_std, 0)) > {float(config.max_region_std)}",
         "'std success ' || round(coalesce(success_std, 0), 3) || ', preserve ' || round(coalesce(preserve_std, 0), 3)"),
    ]
    for reason, cond, detail in region_rules:
        _exclude(con, "region", f"SELECT {k}, '{reason}', {detail} FROM cand_regions WHERE {cond}")
        con.execute(f"DELETE FROM cand_regions WHERE {k} IN (SELECT item_id FROM excl WHERE item_kind = 'region')")
    _exclude(con, "sample", """
        SELECT sample_id, 'no_regions', NULL FROM cand
        WHERE sample_id NOT IN (SELECT DISTINCT sample_id FROM cand_regions)""")
    con.execute("DELETE FROM cand WHERE sample_id IN (SELECT item_id FROM excl WHERE item_kind = 'sample')")
