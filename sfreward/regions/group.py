"""Group-consistent proposals over the warehouse: every GRPO group gets one region set,
proposed on its shared source with the union of its rollouts' change maps, reused by every
sample of the group. Called by the Dagster asset and `sfr propose`. Edit masks that came with
the data (`provided_masks`) join the group's proposal as its edit regions.

One bad group (unreadable source, inconsistent sources) is recorded in the summary and the
others go on; an unreadable edited image drops only that rollout from the union.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Callable

import numpy as np
from PIL import Image

from sfreward.regions.base import ProposerConfig
from sfreward.regions.proposer import Proposer
from sfreward.regions.store import existing_groups, save_region_set
from warehouse import masks as maskcodec
from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)


def read_rgb(store: LocalImageStore, sha256: str) -> np.ndarray:
    """An image from the store as uint8 [H, W, 3] RGB."""
    path = store.local_path(sha256)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise OSError(f"image {sha256} at {path} cannot be decoded: {e}") from e


def _group_rows(wh: Warehouse, group_ids: list[str]) -> dict[str, list[tuple[str, str, str]]]:
    rows = wh.query(
        "SELECT group_id, sample_id, source_sha256, edited_sha256 FROM samples "
        "WHERE group_id IN (SELECT unnest(?)) ORDER BY group_id, sample_id", [list(group_ids)])
    out: dict[str, list] = defaultdict(list)
    for gid, sid, src, ed in rows:
        out[gid].append((sid, src, ed))
    return out


def _provided_masks(wh: Warehouse, group_ids: list[str]) -> dict[str, list[str]]:
    """Edit masks that came with the data (migration 008), as RLE JSON per group."""
    rows = wh.query(
        "SELECT s.group_id, m.rle FROM provided_masks m JOIN samples s ON s.sample_id = m.sample_id "
        "WHERE s.group_id IN (SELECT unnest(?)) ORDER BY s.group_id, s.sample_id", [list(group_ids)])
    out: dict[str, list[str]] = defaultdict(list)
    for gid, rle in rows:
        out[gid].append(rle)
    return out


def propose_for_groups(ws: Workspace, group_ids: list[str], config: ProposerConfig,
                       progress: Callable[[str], None] | None = None) -> dict:
    """Propose and store one region set per group (skipping groups that already have one for
    this config). Returns a JSON-able summary; per-group failures are listed, not raised."""
    t0 = time.perf_counter()
    wh = Warehouse.open(ws)
    store = LocalImageStore(ws)
    chash = config.config_hash()
    group_ids = sorted(dict.fromkeys(group_ids))
    done = existing_groups(wh, group_ids, chash)
    rows = _group_rows(wh, [g for g in group_ids if g not in done])
    given = _provided_masks(wh, [g for g in group_ids if g not in done])
    proposer = Proposer(config)
    summary = {"proposer": config.proposer, "config_hash": chash, "config_name": config.name,
               "n_groups": len(group_ids), "n_existing": len(done), "n_proposed": 0,
               "n_failed": 0, "n_regions": 0, "failures": [], "skipped_samples": []}
    for gid in group_ids:
        if gid in done:
            if progress:
                progress(gid)
            continue
        try:
            members = rows.get(gid)
            if not members:
                raise LookupError(f"group {gid!r} has no samples in the warehouse")
            sources = sorted({src for _, src, _ in members})
            if len(sources) != 1:
                raise ValueError(f"group {gid!r} has samples with {len(sources)} different "
                                 "source images; a GRPO group shares one source")
            source = read_rgb(store, sources[0])
            edits = []
            for sid, _, ed in members:
                try:
                    edits.append(read_rgb(store, ed))
                except (OSError, FileNotFoundError) as e:
                    summary["skipped_samples"].append({"sample_id": sid, "error": str(e)})
            if not edits:
                raise ValueError(f"group {gid!r}: no edited image could be read")
            provided = [maskcodec.decode(r) for r in given.get(gid, [])]
            regions = proposer.propose_group(source, edits, provided)  # slow part: no connection held
            _, created = save_region_set(wh, gid, sources[0], source.shape[:2], regions, config)
            if created:
                summary["n_proposed"] += 1
                summary["n_regions"] += len(regions)
            else:  # another process stored it meanwhile
                summary["n_existing"] += 1
        except Exception as e:  # one bad group never stops the batch
            log.warning("region proposal failed for group %s: %s", gid, e)
            summary["n_failed"] += 1
            summary["failures"].append({"group_id": gid, "error": f"{type(e).__name__}: {e}"})
        if progress:
            progress(gid)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def groups_of_batch(ws: Workspace, batch_id: str) -> list[str]:
    """Groups with at least one sample in the batch. Raises LookupError for an unknown batch."""
    wh = Warehouse.open(ws)
    with wh.read() as con:
        known = con.execute("SELECT 1 FROM batches WHERE batch_id = ?", [batch_id]).fetchone()
        groups = [r[0] for r in con.execute(
            "SELECT DISTINCT group_id FROM samples WHERE batch_id = ? ORDER BY group_id",
            [batch_id]).fetchall()]
    if not known and not groups:
        raise LookupError(f"batch {batch_id!r} is not in the warehouse; ingest it first")
    return groups


def all_groups(ws: Workspace) -> list[str]:
    return [r[0] for r in Warehouse.open(ws).query(
        "SELECT DISTINCT group_id FROM samples ORDER BY group_id")]


def propose_for_batch(ws: Workspace, batch_id: str, config: ProposerConfig,
                      progress: Callable[[str], None] | None = None) -> dict:
    """Region sets for every group touching the batch (see propose_for_groups)."""
    summary = propose_for_groups(ws, groups_of_batch(ws, batch_id), config, progress)
    summary["batch_id"] = batch_id
    return summary
