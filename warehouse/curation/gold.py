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
    rows = []
    for dim, rating in (image or {}).items():
        rows.append(_checked(sample_id, "", dim, rating, IMAGE_DIMS))
    for region_id, dims in (regions or {}).items():
        if not region_id:
            raise ValueError(f"gold answer for sample {sample_id}: empty region_id")
        for dim, rating in dims.items():
            rows.append(_checked(sample_id, region_id, dim, rating, REGION_DIMS))
    with Warehouse.open(ws).write() as con:
        if not con.execute("SELECT count(*) FROM samples WHERE sample_id = ?", [sample_id]).fetchone()[0]:
            raise ValueError(f"gold answer for unknown sample {sample_id!r}")
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
