"""Quality checks of a dataset version (used by the Dagster asset checks and `sfr dataset show`).
Each returns (passed, details) and never raises on bad data: a failing item is reported."""
from __future__ import annotations

from warehouse.curation.config import SPLITS
from warehouse.curation.dataset import get_version
from warehouse.curation.splits import find_leaks
from warehouse.db import Warehouse
from warehouse.masks import MaskError, decode
from warehouse.workspace import Workspace


def check_no_leakage(ws: Workspace, dataset_id: str) -> tuple[bool, dict]:
    with Warehouse.open(ws).read() as con:
        leaks = find_leaks(con, dataset_id)
        bad_split = con.execute(
            f"SELECT count(*) FROM dataset_rows WHERE dataset_id = ? AND split NOT IN {tuple(SPLITS)}",
            [dataset_id]).fetchone()[0]
    return not leaks and not bad_split, {"n_leaks": len(leaks), "leaks": leaks[:20], "n_unknown_split": int(bad_split)}


def check_labels_complete(ws: Workspace, dataset_id: str) -> tuple[bool, dict]:
    """Every row has image-level scores and >= 1 region; every region has a score and exactly
    one background region per sample."""
    with Warehouse.open(ws).read() as con:
        missing_image = con.execute(
            "SELECT count(*) FROM dataset_rows WHERE dataset_id = ? AND "
            "(overall IS NULL OR naturalness IS NULL OR artifacts IS NULL)", [dataset_id]).fetchone()[0]
        no_regions = con.execute(
            "SELECT count(*) FROM dataset_rows r WHERE dataset_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM dataset_regions g WHERE g.dataset_id = r.dataset_id AND g.sample_id = r.sample_id)",
            [dataset_id]).fetchone()[0]
        unscored = con.execute(
            "SELECT count(*) FROM dataset_regions WHERE dataset_id = ? AND success IS NULL AND preserve IS NULL",
            [dataset_id]).fetchone()[0]
    ok = not (missing_image or no_regions or unscored)
    return ok, {"rows_missing_image_scores": int(missing_image), "rows_without_regions": int(no_regions),
                "regions_without_scores": int(unscored)}


def check_agreement_floor(ws: Workspace, dataset_id: str, floor: float | None = None) -> tuple[bool, dict]:
    version = get_version(ws, dataset_id)
    floor = version.config.get("alpha_floor", 0.0) if floor is None else floor
    alphas = version.agreement.get("alpha", {})
    below = {d: a for d, a in alphas.items() if a is not None and a < floor}
    return not below, {"floor": floor, "alpha": alphas, "below": below}


def check_masks_decode(ws: Workspace, dataset_id: str) -> tuple[bool, dict]:
    """Decode every region mask; its size must match the box bounds and its pixel count the area."""
    failures = []
    n = 0
    with Warehouse.open(ws).read() as con:
        cur = con.execute("SELECT sample_id, region_id, rle, x2, y2, area FROM dataset_regions WHERE dataset_id = ?",
                          [dataset_id])
        while batch := cur.fetchmany(2048):
            for sample_id, region_id, rle, x2, y2, area in batch:
                n += 1
                try:
                    m = decode(rle)
                    if x2 > m.shape[1] or y2 > m.shape[0]:
                        raise MaskError(f"bbox exceeds mask size {m.shape}")
                    if int(m.sum()) != int(area):
                        raise MaskError(f"mask has {int(m.sum())} pixels, area says {area}")
                except MaskError as e:
                    failures.append({"sample_id": sample_id, "region_id": region_id, "error": str(e)})
    return not failures, {"n_masks": n, "n_failed": len(failures), "failures": failures[:20]}


def check_no_near_duplicate_sources(ws: Workspace, dataset_id: str, max_bits: int | None = None) -> tuple[bool, dict]:
    """No test sample's source photo is a near-duplicate (nearsource.py: flip, 90-degree turn,
    crop, resize, re-encode) of a training sample's source. Sources are hashed first if needed;
    an unreadable source cannot be compared and is reported as such (it does not fail the check)."""
    import numpy as np

    from warehouse.curation.nearsource import SOURCE_HAMMING, ensure_source_hashes, load_hashes, pair_distances

    hashed = ensure_source_hashes(ws)
    if max_bits is None:
        max_bits = int(get_version(ws, dataset_id).config.get("source_hamming", SOURCE_HAMMING))
    q = "SELECT source_sha256 FROM dataset_rows WHERE dataset_id = ? AND split = ?"
    with Warehouse.open(ws).read() as con:
        test, t_ident, t_every = load_hashes(con, q, [dataset_id, "test"])
        train, r_ident, r_every = load_hashes(con, q, [dataset_id, "train"])
        n_test = con.execute(f"SELECT count(DISTINCT source_sha256) FROM ({q})", [dataset_id, "test"]).fetchone()[0]
    pairs = []
    if test and train:
        ident = np.concatenate([t_ident, r_ident])
        d = pair_distances(ident, np.concatenate([t_every, r_every]))[:len(test), len(test):]
        for i, j in zip(*np.nonzero(d <= max_bits)):
            pairs.append({"test_source": test[i], "train_source": train[j], "bits": int(d[i, j])})
    details = {"max_bits": max_bits, "n_test_sources": int(n_test), "n_unhashed_test_sources": int(n_test) - len(test),
               "n_near_duplicates": len(pairs), "near_duplicates": pairs[:20], "hash_failures": hashed["failed"]}
    if pairs:
        details["fix"] = ("rebuild the dataset with CurationConfig split_linking='perceptual' (a new split scheme "
                          "that links near-duplicate sources)")
    return not pairs, details
