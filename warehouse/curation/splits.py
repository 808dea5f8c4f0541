"""Leakage-free, stratified, stable train/validation/test splits.

Samples are linked when they share a source image, an edited image (also when one sample's
edited image is another's source) or a GRPO group, and under the 'perceptual' linking also when
their sources are near-duplicates (flips, 90-degree turns, crops, resizes, re-encodes of one photo;
warehouse/curation/nearsource.py): each near-duplicate source's sha256 becomes an image key of
the other's samples, so a mirrored copy of an assigned photo inherits its split. Linked samples
form a component
(union-find via scipy connected components) and a component never straddles splits.

Stability: every image hash and group id that receives a split is written to
`split_assignments` (per scheme = seed + fractions + linking) and never changes. A workspace
keeps the linking of its existing assignments until it opts in (CurationConfig.split_linking,
resolve_linking). A new sample touching
an assigned key inherits its split. A new sample whose keys were assigned to two different
splits (it would bridge them) is excluded as `split_conflict`; if new keys still join samples
of different splits, the samples with new keys in that component are excluded as well.
Existing samples never move.

New components are allocated per edit category (stratified): in the order of a seeded hash of
their smallest key, each goes to the split furthest below its target share of that category's
samples (existing assignments included). Deterministic from the seed and the warehouse state.
"""
from __future__ import annotations

import dataclasses
import hashlib

import duckdb
import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from warehouse.curation.config import SPLITS, CurationConfig
from warehouse.curation.nearsource import link_table
from warehouse.db import insert_rows


def resolve_linking(con: duckdb.DuckDBPyConnection, config: CurationConfig) -> CurationConfig:
    """config with split_linking 'auto' resolved: 'sha256' when the warehouse already holds
    assignments of the sha256 scheme (same seed and fractions) and none of the perceptual one
    (an existing workspace keeps its splits until it opts in), else 'perceptual'."""
    if config.split_linking != "auto":
        return config
    def n(linking: str) -> int:
        return con.execute("SELECT count(*) FROM split_assignments WHERE scheme = ?",
                           [config.split_scheme(linking)]).fetchone()[0]
    linking = "sha256" if n("sha256") and not n("perceptual") else "perceptual"
    return dataclasses.replace(config, split_linking=linking)


def assign_splits(con: duckdb.DuckDBPyConnection, config: CurationConfig) -> dict[str, int]:
    """Temp table `sample_split(sample_id, split)` for every sample of the warehouse (conflicts
    left out and recorded in `excl` when still candidates); new keys persisted. With the
    'perceptual' linking, `source_hashes` must be filled first (nearsource.ensure_source_hashes)."""
    config = resolve_linking(con, config)
    scheme = config.split_scheme()
    _key_tables(con, config, scheme)
    samples, nodes, si, ni = _read_key_graph(con)
    n_s = len(samples["sample_id"])
    if n_s == 0:
        con.execute("CREATE OR REPLACE TEMP TABLE sample_split (sample_id TEXT, split TEXT)")
        return {s: 0 for s in SPLITS}
    node_bits = np.asarray(nodes["bits"], dtype=np.int64)
    split, comp = _inherit_splits(si, ni, node_bits, n_s)
    _allocate_new_components(split, comp, si, ni, np.asarray(samples["category"], dtype=object),
                             np.asarray(nodes["k"], dtype=object), config)
    ids = np.asarray(samples["sample_id"], dtype=object)
    _record_splits(con, ids, split, scheme)
    ok = split >= 0
    return {s: int((split == i).sum()) for i, s in enumerate(SPLITS)} | {"conflict": int((~ok).sum())}


def _key_tables(con: duckdb.DuckDBPyConnection, config: CurationConfig, scheme: str) -> None:
    """Temp tables `sk(si, key_kind, key)`: every key (image sha256, group id, and near-duplicate
    sources under the perceptual linking) of every sample, samples numbered by sample_id; and
    `sk_nodes(ni, key_kind, key, split)`: the distinct keys with their recorded split, if any."""
    near = ""
    if config.split_linking == "perceptual":
        link_table(con, config.source_hamming)
        near = "UNION SELECT si, 'image', l.other FROM s JOIN src_links l ON l.sha = s.source_sha256"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sk AS
        WITH s AS (SELECT row_number() OVER (ORDER BY sample_id) - 1 AS si, * FROM samples)
        SELECT si, 'image' AS key_kind, source_sha256 AS key FROM s
        UNION SELECT si, 'image', edited_sha256 FROM s
        UNION SELECT si, 'group', group_id FROM s
        {near}
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE sk_nodes AS
        SELECT row_number() OVER (ORDER BY n.key_kind, n.key) - 1 AS ni, n.key_kind, n.key, a.split
        FROM (SELECT DISTINCT key_kind, key FROM sk) n
        LEFT JOIN split_assignments a ON a.scheme = ? AND a.key_kind = n.key_kind AND a.key = n.key
    """, [scheme])


def _read_key_graph(con: duckdb.DuckDBPyConnection) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """(samples {sample_id, category}, nodes {ni, k = 'kind:key', bits = 1 << split index or 0},
    edge arrays si [E], ni [E]: sample si has key ni)."""
    samples = con.execute("SELECT sample_id, coalesce(category, '') AS category FROM samples ORDER BY sample_id").fetchnumpy()
    edges = con.execute("SELECT sk.si, n.ni FROM sk JOIN sk_nodes n USING (key_kind, key)").fetchnumpy()
    bits_sql = " ".join(f"WHEN '{s}' THEN {1 << i}" for i, s in enumerate(SPLITS))
    nodes = con.execute(f"SELECT ni, key_kind || ':' || key AS k, CASE split {bits_sql} ELSE 0 END AS bits "
                        "FROM sk_nodes ORDER BY ni").fetchnumpy()
    return (samples, nodes, np.asarray(edges["si"], dtype=np.int64), np.asarray(edges["ni"], dtype=np.int64))


def _inherit_splits(si: np.ndarray, ni: np.ndarray, node_bits: np.ndarray, n_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the split index its component inherits from assigned keys, -1 for a new
    component, -2 for a conflict; and its component label. Components are connected
    components of the sample-key graph."""
    n_n = len(node_bits)
    graph = coo_matrix((np.ones(len(si)), (si, n_s + ni)), shape=(n_s + n_n, n_s + n_n))
    _, labels = connected_components(graph, directed=False)
    comp = labels[:n_s].copy()
    comp_bits = np.zeros(labels.max() + 1, dtype=np.int64)
    np.bitwise_or.at(comp_bits, comp[si], node_bits[ni])
    n_set = sum((comp_bits >> i) & 1 for i in range(len(SPLITS)))

    split = np.full(n_s, -1, dtype=np.int64)           # -1: new component, -2: conflict
    for i in range(len(SPLITS)):
        split[comp_bits[comp] == (1 << i)] = i
    mixed = np.flatnonzero(n_set[comp] > 1)
    if len(mixed):
        _split_mixed_components(split, comp, si, ni, node_bits, mixed, offset=labels.max() + 1)
    return split, comp


def _split_mixed_components(split: np.ndarray, comp: np.ndarray, si: np.ndarray, ni: np.ndarray,
                            node_bits: np.ndarray, mixed: np.ndarray, offset: int) -> None:
    """New keys join samples of different splits. Add those samples one at a time in sample_id
    order (greedy union-find over keys, each key knowing its split); a sample that would join two
    splits is a conflict (-2). Existing samples never conflict: their keys all carry the same
    split. Updates `split` and `comp` (new components among the leftovers) in place."""
    n_s = len(split)
    order = np.argsort(si, kind="stable")
    starts = np.searchsorted(si[order], np.arange(n_s + 1))
    parent = list(range(len(node_bits)))
    bits = node_bits.tolist()

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s_i in mixed:
        roots = {find(int(n)) for n in ni[order[starts[s_i]:starts[s_i + 1]]]}
        b = 0
        for r in roots:
            b |= bits[r]
        if b & (b - 1):
            split[s_i] = -2
            continue
        root = min(roots)
        for r in roots:
            parent[r] = root
        bits[root] = b
    for s_i in mixed:
        if split[s_i] == -2:
            continue
        root = find(int(ni[order[starts[s_i]]]))
        b = bits[root]
        split[s_i] = -1 if b == 0 else b.bit_length() - 1
        comp[s_i] = offset + root


def _allocate_new_components(split: np.ndarray, comp: np.ndarray, si: np.ndarray, ni: np.ndarray,
                             cats: np.ndarray, keys: np.ndarray, config: CurationConfig) -> None:
    """Give every new component (split -1) a split, stratified by category: in the order of
    (category, seeded hash of its smallest key), each goes to the split furthest below its target
    share of that category (existing assignments included). Updates `split` in place."""
    new = np.flatnonzero(split == -1)
    if not len(new):
        return
    min_key: dict[int, str] = {}
    for s_i, n_i in zip(si, ni):                   # smallest key of each new component
        c = int(comp[s_i])
        if split[s_i] == -1 and (c not in min_key or keys[n_i] < min_key[c]):
            min_key[c] = keys[n_i]
    comp_members: dict[int, list[int]] = {}
    for s_i in new:
        comp_members.setdefault(int(comp[s_i]), []).append(int(s_i))
    counts: dict[str, np.ndarray] = {}
    for s_i in np.flatnonzero(split >= 0):         # existing per-category split counts
        counts.setdefault(cats[s_i], np.zeros(len(SPLITS)))[split[s_i]] += 1
    frac = np.array(config.fractions)
    order = []
    for c, members in comp_members.items():
        member_cats = sorted(cats[m] for m in members)
        cat = max(set(member_cats), key=lambda x: (member_cats.count(x), -member_cats.index(x)))
        h = hashlib.sha256(f"{config.seed}:{min_key[c]}".encode()).hexdigest()
        order.append((cat, h, c))
    order.sort()
    for cat, _, c in order:
        cnt = counts.setdefault(cat, np.zeros(len(SPLITS)))
        size = len(comp_members[c])
        deficit = np.where(frac > 0, frac * (cnt.sum() + size) - cnt, -np.inf)
        j = int(np.argmax(deficit))                 # ties: train, validation, test order
        cnt[j] += size
        split[comp_members[c]] = j


def _record_splits(con: duckdb.DuckDBPyConnection, ids: np.ndarray, split: np.ndarray, scheme: str) -> None:
    """Temp table `sample_split`, the new keys' assignments persisted in `split_assignments`,
    and conflicts excluded from `cand` (recorded in `excl`) when curation tables exist."""
    ok = split >= 0
    con.register("_split_tbl", pa.table({
        "sample_id": pa.array(ids[ok].tolist(), pa.string()),
        "split": pa.array([SPLITS[j] for j in split[ok]], pa.string()),
        "si": pa.array(np.flatnonzero(ok), pa.int64())}))
    con.execute("CREATE OR REPLACE TEMP TABLE sample_split AS SELECT * FROM _split_tbl")
    con.unregister("_split_tbl")
    con.execute("""
        INSERT INTO split_assignments (scheme, key_kind, key, split)
        SELECT DISTINCT ?, n.key_kind, n.key, p.split
        FROM sample_split p JOIN sk USING (si) JOIN sk_nodes n USING (key_kind, key)
        WHERE n.split IS NULL
        ON CONFLICT DO NOTHING
    """, [scheme])
    conflicts = ids[~ok].tolist()
    if conflicts and _has_table(con, "excl"):
        con.execute("CREATE OR REPLACE TEMP TABLE _conf (sample_id TEXT)")
        insert_rows(con, "_conf", ["sample_id"], [(c,) for c in conflicts])
        con.execute("""INSERT INTO excl SELECT 'sample', sample_id, 'split_conflict',
                       'would join samples already in different splits' FROM _conf
                       WHERE sample_id IN (SELECT sample_id FROM cand)""")
        con.execute("DELETE FROM cand WHERE sample_id IN (SELECT sample_id FROM _conf)")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0])


def find_leaks(con: duckdb.DuckDBPyConnection, dataset_id: str) -> list[dict]:
    """Keys (source/edited image, group) of a dataset version present in more than one split."""
    rows = con.execute("""
        WITH k AS (
            SELECT 'image' AS kind, source_sha256 AS key, split FROM dataset_rows WHERE dataset_id = ?
            UNION ALL SELECT 'image', edited_sha256, split FROM dataset_rows WHERE dataset_id = ?
            UNION ALL SELECT 'group', group_id, split FROM dataset_rows WHERE dataset_id = ?)
        SELECT kind, key, list(DISTINCT split ORDER BY split) FROM k
        GROUP BY kind, key HAVING count(DISTINCT split) > 1 ORDER BY kind, key
    """, [dataset_id] * 3).fetchall()
    return [{"kind": k, "key": key, "splits": list(s)} for k, key, s in rows]
