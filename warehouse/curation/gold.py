"""Known answers for gold tasks (`tasks.is_gold`), kept in `gold_answers` on the 1..5 star scale.
Annotators' ratings on gold tasks are scored against them in agreement.py."""
from __future__ import annotations

from warehouse.curation.config import IMAGE_DIMS, REGION_DIMS
from warehouse.db import Warehouse
from warehouse.workspace import Workspace


def record_gold(ws: Workspace, sample_id: str, image: dict[str, int] | None = None,
                regions: dict[str, dict[str, int]] | None = None) -> int:
    """Store (replace) gold ratings of one sample: image = {dimension: rating} for overall /
    naturalness / artifacts, regions = {region_id: {"success": r, "preserve": r}}. Returns the
    number of answers stored. Raises ValueError naming the bad entry."""
    return record_gold_many(ws, {sample_id: {"image": image or {}, "regions": regions or {}}})


def record_gold_many(ws: Workspace, answers: dict[str, dict]) -> int:
    """Store gold ratings of many samples, all or nothing: `answers` = {sample_id: {"image":
    {dimension: rating}, "regions": {region_id: {dimension: rating}}}}. Every entry is checked
    (dimensions, 1..5 integer ratings, known samples and, for regions, known region ids of the
    sample's tasks) before anything is written; null ratings are skipped. Returns the number
    of answers stored."""
    if not isinstance(answers, dict):
        raise ValueError(f"gold answers: expected an object keyed by sample id, got {type(answers).__name__}")
    rows = []
    for sample_id, entry in answers.items():
        if not isinstance(entry, dict) or set(entry) - {"image", "regions"}:
            raise ValueError(f"gold answer for sample {sample_id}: expected an object with 'image' and/or 'regions'")
        for dim, rating in (entry.get("image") or {}).items():
            if rating is not None:  # null: no gold answer for this dimension (template default)
                rows.append(_checked(sample_id, "", dim, rating, IMAGE_DIMS))
        for region_id, dims in (entry.get("regions") or {}).items():
            if not region_id:
                raise ValueError(f"gold answer for sample {sample_id}: empty region_id")
            if not isinstance(dims, dict):
                raise ValueError(f"gold answer {sample_id}/{region_id}: expected {{dimension: rating}}")
            for dim, rating in dims.items():
                if rating is not None:
                    rows.append(_checked(sample_id, region_id, dim, rating, REGION_DIMS))
    with Warehouse.open(ws).write() as con:
        known = {r[0] for r in con.execute("SELECT sample_id FROM samples WHERE sample_id IN "
                                           "(SELECT unnest(?))", [list(answers)]).fetchall()}
        unknown = sorted(set(answers) - known)
        if unknown:
            raise ValueError(f"gold answers for unknown samples: {', '.join(map(repr, unknown[:5]))}"
                             + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        regions = {(s, r) for s, r in con.execute(
            "SELECT t.sample_id, r.region_id FROM tasks t JOIN regions r USING (region_set_id) "
            "WHERE t.sample_id IN (SELECT unnest(?))", [list(answers)]).fetchall()}
        for s, r, dim, _ in rows:
            if r and (s, r) not in regions:
                raise ValueError(f"gold answer {s}/{r}/{dim}: no region {r!r} in the tasks of sample {s}; "
                                 "use the region ids the tasks were pushed with (sfr dataset show, or the warehouse)")
        con.executemany("INSERT OR REPLACE INTO gold_answers (sample_id, region_id, dimension, rating) "
                        "VALUES (?, ?, ?, ?)", rows)
    return len(rows)


def _checked(sample_id: str, region_id: str, dim: str, rating, allowed: tuple[str, ...]) -> list:
    where = f"gold answer {sample_id}/{region_id or 'image'}/{dim}"
    if dim not in allowed:
        raise ValueError(f"{where}: dimension must be one of {allowed}")
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValueError(f"{where}: rating must be an integer 1..5 stars, got {rating!r}")
    return [sample_id, region_id, dim, rating]


def gold_template(ws: Workspace, sample_ids: list[str]) -> dict[str, dict]:
    """A fill-in skeleton for `record_gold_many`: every rating null, region ids and kinds of the
    samples' tasks (the background has no success rating)."""
    wh = Warehouse.open(ws)
    rows = wh.query("SELECT t.sample_id, r.region_id, r.kind FROM tasks t JOIN regions r USING (region_set_id) "
                    "WHERE t.sample_id IN (SELECT unnest(?)) ORDER BY t.sample_id, r.idx", [sample_ids])
    found = {r[0] for r in rows}
    missing = [s for s in sample_ids if s not in found]
    if missing:
        raise ValueError(f"no pushed task with regions for samples: {', '.join(map(repr, missing[:5]))}; "
                         "push them first (sfr annotate push --gold ...)")
    out: dict[str, dict] = {s: {"image": {d: None for d in IMAGE_DIMS}, "regions": {}} for s in sample_ids}
    for s, rid, kind in rows:
        out[s]["regions"][rid] = {d: None for d in REGION_DIMS if not (kind == "background" and d == "success")}
    return out
