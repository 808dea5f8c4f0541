"""Region sets in the warehouse (tables of migration 002): one set per (group_id, config_hash),
masks as COCO RLE JSON (warehouse.masks), written in one short transaction; writing a set that
exists is a no-op, so reruns are idempotent and a new config adds a new set.
"""
from __future__ import annotations

import hashlib
import json

from sfreward.regions.base import ProposerConfig, Region
from warehouse import masks as maskcodec
from warehouse.db import Warehouse, insert_rows
from warehouse.workspace import Workspace


class RegionsNotFound(LookupError):
    """No region set (or no sample) matches the request."""


def region_set_id(group_id: str, config_hash: str) -> str:
    return "rs_" + hashlib.sha256(f"{group_id}\x00{config_hash}".encode()).hexdigest()[:20]


def existing_groups(wh: Warehouse, group_ids: list[str], config_hash: str) -> set[str]:
    """The groups among `group_ids` that already have a region set for `config_hash`."""
    if not group_ids:
        return set()
    rows = wh.query(
        "SELECT group_id FROM region_sets WHERE config_hash = ? AND group_id IN (SELECT unnest(?))",
        [config_hash, list(group_ids)])
    return {r[0] for r in rows}


def save_region_set(wh: Warehouse, group_id: str, image_sha256: str, shape: tuple[int, int],
                    regions: list[Region], config: ProposerConfig) -> tuple[str, bool]:
    """Store a group's regions (background last). Returns (region_set_id, created); created is
    False when the set already existed (nothing written). Sets `region_id` on the regions."""
    chash = config.config_hash()
    rsid = region_set_id(group_id, chash)
    rows = []
    for idx, r in enumerate(regions):
        r.region_id = f"{rsid}:{idx}"
        x1, y1, x2, y2 = r.bbox
        rows.append([r.region_id, rsid, idx, r.kind, maskcodec.to_json(maskcodec.encode(r.mask)),
                     x1, y1, x2, y2, r.area, r.predicted_iou, r.stability_score, r.proposed_on,
                     r.change_fraction])
    with wh.write() as con:
        if con.execute("SELECT 1 FROM region_sets WHERE group_id = ? AND config_hash = ?",
                       [group_id, chash]).fetchone():
            return rsid, False
        con.execute(
            "INSERT INTO region_sets (region_set_id, group_id, proposer, config_hash, config, "
            "image_sha256, height, width, n_regions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [rsid, group_id, config.proposer, chash, config.to_json(), image_sha256,
             int(shape[0]), int(shape[1]), len(regions)])
        if rows:
            insert_rows(con, "regions", ["region_id", "region_set_id", "idx", "kind", "rle", "x1", "y1", "x2", "y2",
                                         "area", "predicted_iou", "stability_score", "proposed_on", "change_fraction"],
                        rows)
    return rsid, True


def load_region_set(wh: Warehouse, rsid: str) -> list[Region]:
    """All regions of a set, in order (background last), masks decoded to bool [H, W]."""
    with wh.read() as con:
        head = con.execute("SELECT proposer, config_hash FROM region_sets WHERE region_set_id = ?",
                           [rsid]).fetchone()
        if head is None:
            raise RegionsNotFound(f"region set {rsid} does not exist")
        rows = con.execute(
            "SELECT region_id, kind, rle, x1, y1, x2, y2, area, predicted_iou, stability_score, "
            "proposed_on, change_fraction FROM regions WHERE region_set_id = ? ORDER BY idx",
            [rsid]).fetchall()
    proposer, chash = head
    return [Region(kind=kind, mask=maskcodec.decode(rle), bbox=(x1, y1, x2, y2), area=int(area),
                   proposed_on=on, proposer=proposer, config_hash=chash, predicted_iou=piou,
                   stability_score=stab, change_fraction=frac, region_id=rid)
            for rid, kind, rle, x1, y1, x2, y2, area, piou, stab, on, frac in rows]


def region_set_for_sample(wh: Warehouse, sample_id: str, config_hash: str | None = None) -> str:
    """The region_set_id serving a sample: its group's set for `config_hash`, or the most
    recently created set of the group when the hash is omitted."""
    with wh.read() as con:
        row = con.execute("SELECT group_id FROM samples WHERE sample_id = ?", [sample_id]).fetchone()
        if row is None:
            raise RegionsNotFound(f"sample {sample_id!r} is not in the warehouse")
        group_id = row[0]
        sql = "SELECT region_set_id FROM region_sets WHERE group_id = ?"
        params = [group_id]
        if config_hash is not None:
            sql += " AND config_hash = ?"
            params.append(config_hash)
        found = con.execute(sql + " ORDER BY created_at DESC, region_set_id LIMIT 1", params).fetchone()
    if found is None:
        which = f"config {config_hash}" if config_hash else "any config"
        raise RegionsNotFound(
            f"no region set for sample {sample_id!r} (group {group_id!r}, {which}); run `sfr propose`")
    return found[0]


def load_regions(ws: Workspace, sample_id: str, config_hash: str | None = None) -> list[Region]:
    """Regions of a sample (shared by its whole GRPO group), background last. Raises
    RegionsNotFound when the sample or its region set does not exist."""
    wh = Warehouse.open(ws)
    return load_region_set(wh, region_set_for_sample(wh, sample_id, config_hash))


def region_set_summary(wh: Warehouse, rsid: str) -> dict:
    rows = wh.query_dicts("SELECT * FROM region_sets WHERE region_set_id = ?", [rsid])
    if not rows:
        raise RegionsNotFound(f"region set {rsid} does not exist")
    out = rows[0]
    out["config"] = json.loads(out["config"])
    return out
