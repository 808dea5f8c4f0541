"""Region masks after annotation: the annotators' corrections of the prefilled proposals.

Annotators see each proposal region prefilled as a brush mask in Label Studio and may fix it
(paint or erase pixels). Sync stores every annotator's final mask (`annotation_regions.rle`);
this module turns them into the mask a dataset publishes for that region:

- no usable annotator changed the proposal -> the proposal mask (`mask_source` 'proposal');
- otherwise a per-pixel majority vote over the usable annotators who kept the region, the
  proposal breaking ties (an even split keeps the proposal's pixel): one annotator's fix wins
  outright, two annotators who disagree fall back to the proposal where they disagree
  (`mask_source` 'corrected');
- a vote that leaves no pixel (annotators' masks disjoint) excludes the region with reason
  `empty_consensus_mask` rather than publishing an empty region.

Regions the annotators drew themselves keep their own mask (`mask_source` 'drawn'). Only the
regions whose stored RLE differs from the proposal's are decoded (both are canonical COCO RLE
JSON from `warehouse.masks`), so untouched prefills cost one string comparison in SQL.
"""
from __future__ import annotations

import duckdb
import numpy as np

from warehouse import masks
from warehouse.db import insert_rows


def consensus_mask(annotated: list[np.ndarray], proposal: np.ndarray) -> np.ndarray:
    """Majority vote of `annotated` bool masks `[H, W]`, ties broken by `proposal` `[H, W]`."""
    if not annotated:
        return proposal.copy()
    votes = np.zeros(proposal.shape, dtype=np.int32)
    for m in annotated:
        if m.shape != proposal.shape:
            raise ValueError(f"annotated mask {m.shape} does not match the proposal {proposal.shape}")
        votes += m
    n = len(annotated)
    return (2 * votes > n) | ((2 * votes == n) & proposal)


def _decode_or_none(rle: str, expected_size: tuple[int, int] | None = None) -> np.ndarray | None:
    try:
        return masks.decode(rle, expected_size=expected_size)   # other sizes refused before decoding
    except masks.MaskError:
        return None


def apply_mask_consensus(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rewrite the mask, box and area of proposal regions in temp table `all_regions` (columns
    sample_id, region_id, rle, x1, y1, x2, y2, area, mask_source) where usable annotators
    (temp table `cur_regions`, with `rle`) changed them. Regions whose vote is empty are
    deleted from `all_regions` and listed in temp table `empty_consensus` (sample_id,
    region_id, detail). Returns counts {'corrected', 'empty'}."""
    rows = con.execute("""
        SELECT a.sample_id, a.region_id, a.rle, list(cr.rle ORDER BY cr.annotator) AS rles
        FROM all_regions a JOIN cur_regions cr USING (sample_id, region_id)
        WHERE a.mask_source = 'proposal' AND cr.usable AND NOT cr.is_drawn AND cr.rle IS NOT NULL
        GROUP BY a.sample_id, a.region_id, a.rle
        HAVING bool_or(cr.rle <> a.rle)
        ORDER BY a.sample_id, a.region_id
    """).fetchall()
    fixed, empty = [], []
    for sample_id, region_id, proposal_rle, rles in rows:
        try:
            proposal = masks.decode(proposal_rle)
        except masks.MaskError:
            continue  # left as is: the dataset's `region_masks_decode` check reports and blocks it
        # Undecodable or other-size masks cannot vote; sync already refuses masks that do not
        # match the edited image, so this only guards rows written by other means.
        annotated = [m for m in (_decode_or_none(r, proposal.shape) for r in rles) if m is not None]
        m = consensus_mask(annotated, proposal)
        if np.array_equal(m, proposal):  # a minority fix: the vote keeps the proposal
            continue
        if not m.any():
            empty.append([sample_id, region_id, f"the {len(annotated)} annotators' masks have no pixel in common"])
            continue
        x1, y1, x2, y2 = masks.bbox_xyxy(m)
        fixed.append([sample_id, region_id, masks.to_json(masks.encode(m)), x1, y1, x2, y2, int(m.sum())])
    con.execute("CREATE OR REPLACE TEMP TABLE empty_consensus (sample_id TEXT, region_id TEXT, detail TEXT)")
    if empty:
        insert_rows(con, "empty_consensus", ["sample_id", "region_id", "detail"], empty)
        con.execute("DELETE FROM all_regions a USING empty_consensus e "
                    "WHERE a.sample_id = e.sample_id AND a.region_id = e.region_id")
    if fixed:
        con.execute("CREATE OR REPLACE TEMP TABLE fixed_masks (sample_id TEXT, region_id TEXT, rle TEXT, "
                    "x1 INTEGER, y1 INTEGER, x2 INTEGER, y2 INTEGER, area BIGINT)")
        insert_rows(con, "fixed_masks", ["sample_id", "region_id", "rle", "x1", "y1", "x2", "y2", "area"], fixed)
        con.execute("""
            UPDATE all_regions a SET rle = f.rle, x1 = f.x1, y1 = f.y1, x2 = f.x2, y2 = f.y2, area = f.area,
                                     mask_source = 'corrected'
            FROM fixed_masks f WHERE a.sample_id = f.sample_id AND a.region_id = f.region_id
        """)
    return {"corrected": len(fixed), "empty": len(empty)}

