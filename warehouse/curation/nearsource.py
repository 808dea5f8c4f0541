"""Near-duplicate source photos: the perceptual linking of the 'perceptual' split scheme.

Two source images are near-duplicates when one is a flip, a 90-degree turn, a centre crop of most
of the other (down to about 80% of each side), a resize or a re-encode of it, in any combination.
Method (filters.dihedral_dhashes): a 256-bit difference hash of the grey image, taken for the
centre crops 100/90/80% and for each of the 8 dihedral variants. The distance of images A and B
is the minimum Hamming distance between A's as-is hash (crop 100, variant 0) and any of B's
24 hashes, and the same from B to A: a mirrored, turned or cropped copy then meets its original
in the variant and crop that undoes it. (The hash of the minimal variant would not do: two
near-identical images can pick different minimal variants and land far apart.)

Threshold: SOURCE_HAMMING = 28 bits of 256. On scikit-image's photos the worst same-photo
distance measured was 19 (a 90-degree turn, 90% crop, downsizing and JPEG q60 together; a flip or
turn alone is 0-3, a 90% centre crop 7) and the closest two different photos were 37 apart
(rocket vs page); tests/warehouse/curation/test_nearsource.py pins both. Not covered: crops that
are far from centred (a 90% corner crop shifts the content by 10%: 60-110 bits) and crops
smaller than ~80% of a side.

Hashes are cached in `source_hashes` per method (about 60 ms to hash a 512 px source on the
shared 2-core machine). Pairs are found by brute force over all (source, hash) pairs in numpy
(popcount of 4 words): N^2 * 24 * 4 word operations, 0.5 s for 500 sources and ~9 s for 2,000 on
that machine under load (quadratic: an LSH index is the next step beyond ~10,000 sources).
"""
from __future__ import annotations

import logging

import duckdb
import numpy as np

from warehouse.curation.filters import SOURCE_CROPS, dihedral_dhashes
from warehouse.db import Warehouse, insert_rows
from warehouse.imagestore import LocalImageStore
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)

METHOD = "dhash256-dihedral-c100-90-80-v1"
SOURCE_HAMMING = 28
_N_HASHES = 8 * len(SOURCE_CROPS)


def ensure_source_hashes(ws: Workspace) -> dict[str, int]:
    """Hash every sample's source image not yet in `source_hashes` for METHOD. An unreadable
    image is logged and skipped (it then links by sha256 only), never fails the batch."""
    wh = Warehouse.open(ws)
    todo = [r[0] for r in wh.query(
        "SELECT DISTINCT source_sha256 FROM samples WHERE source_sha256 NOT IN "
        "(SELECT sha256 FROM source_hashes WHERE method = ?)", [METHOD])]
    store = LocalImageStore(ws)
    rows, failed = [], 0
    for sha in todo:
        try:
            rows += [[sha, METHOD, pct, v, *words] for pct, v, words in dihedral_dhashes(store.get(sha))]
        except Exception as e:  # missing file, truncated bytes, unknown format
            failed += 1
            log.warning("cannot hash source image %s: %s", sha, e)
    if rows:
        with wh.write() as con:
            insert_rows(con, "source_hashes", ["sha256", "method", "crop", "variant", "h0", "h1", "h2", "h3"], rows,
                        "ON CONFLICT DO NOTHING")
    return {"hashed": len(rows) // _N_HASHES, "failed": failed}


def pair_distances(ident: np.ndarray, every: np.ndarray, chunk: int = 16) -> np.ndarray:
    """ident: uint64 [N, W] (as-is hashes), every: uint64 [N, V, W] (all hashes) ->
    int [N, N]: d[i, j] = min(min over j's hashes of |ident_i ^ h|, the same from j to i), in bits.
    Word by word into a small uint16 accumulator (temporaries of chunk x N x V stay in cache)."""
    n = len(ident)
    one_way = np.empty((n, n), dtype=np.int64)
    for a in range(0, n, chunk):
        acc = np.zeros((min(chunk, n - a), n, every.shape[1]), np.uint16)
        for w in range(every.shape[2]):
            acc += np.bitwise_count(ident[a:a + chunk, w][:, None, None] ^ every[None, :, :, w])
        one_way[a:a + chunk] = acc.min(-1)
    return np.minimum(one_way, one_way.T)


def load_hashes(con: duckdb.DuckDBPyConnection, shas_sql: str, params: list | None = None
                ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(shas, ident [N, 4], every [N, 24, 4]) as uint64 for the sources selected by
    `shas_sql` (a query returning one column of sha256) that have all METHOD hashes."""
    rows = con.execute(f"""
        SELECT sha256, list([h0, h1, h2, h3] ORDER BY crop DESC, variant) AS hs FROM source_hashes
        WHERE method = ? AND sha256 IN ({shas_sql})
        GROUP BY sha256 HAVING count(*) = {_N_HASHES} ORDER BY sha256
    """, [METHOD, *(params or [])]).fetchall()
    if not rows:
        return [], np.zeros((0, 4), np.uint64), np.zeros((0, _N_HASHES, 4), np.uint64)
    every = np.array([r[1] for r in rows], dtype=np.int64).view(np.uint64)        # [N, 24, 4]
    return [r[0] for r in rows], every[:, 0].copy(), every                         # crop 100, variant 0 first


def near_duplicate_pairs(con: duckdb.DuckDBPyConnection, max_bits: int = SOURCE_HAMMING
                         ) -> list[tuple[str, str, int]]:
    """(sha a, sha b, distance) with a < b for every two distinct sources of the warehouse's
    samples within max_bits of each other."""
    shas, ident, every = load_hashes(con, "SELECT source_sha256 FROM samples")
    if len(shas) < 2:
        return []
    d = pair_distances(ident, every)
    i, j = np.nonzero(np.triu(d <= max_bits, 1))
    return [(shas[a], shas[b], int(d[a, b])) for a, b in zip(i, j)]


def link_table(con: duckdb.DuckDBPyConnection, max_bits: int = SOURCE_HAMMING) -> int:
    """Temp table `src_links(sha, other)`: both directions of every near-duplicate source pair
    (splits.py adds `other` as an image key of every sample whose source is `sha`)."""
    pairs = near_duplicate_pairs(con, max_bits)
    con.execute("CREATE OR REPLACE TEMP TABLE src_links (sha TEXT, other TEXT)")
    if pairs:
        insert_rows(con, "src_links", ["sha", "other"], [(a, b) for a, b, _ in pairs] + [(b, a) for a, b, _ in pairs])
    return len(pairs)


def hash_arrays(hashes: list[tuple[int, int, list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """filters.dihedral_dhashes output -> (ident uint64 [W], every uint64 [V, W]) in the order
    load_hashes uses (crop descending, then variant)."""
    ordered = sorted(hashes, key=lambda t: (-t[0], t[1]))
    every = np.array([w for _, _, w in ordered], dtype=np.int64).view(np.uint64)
    return every[0].copy(), every


def source_distance(a: list[tuple[int, int, list[int]]], b: list[tuple[int, int, list[int]]]) -> int:
    """Perceptual distance (bits) of two images from their dihedral_dhashes (module docstring)."""
    (ia, ea), (ib, eb) = hash_arrays(a), hash_arrays(b)
    return int(pair_distances(np.stack([ia, ib]), np.stack([ea, eb]))[0, 1])
