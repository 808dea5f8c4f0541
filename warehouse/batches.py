"""Reads of the ingest tables (`batches`, `samples`) for the orchestration layer: which batches
exist, where a batch came from, which hold no valid sample. Named here so the Dagster defs and
the demo hold no SQL (ingest itself writes these tables: warehouse/ingest.py)."""
from __future__ import annotations

from warehouse.db import Warehouse


def batch_ids(wh: Warehouse) -> list[str]:
    """Every registered batch, oldest first."""
    return [r[0] for r in wh.query("SELECT batch_id FROM batches ORDER BY created_at")]


def batch_source(wh: Warehouse, batch_id: str) -> str | None:
    """The input a batch was registered from (manifest path or dataset folder), None if unknown."""
    rows = wh.query("SELECT source_uri FROM batches WHERE batch_id = ?", [batch_id])
    return rows[0][0] if rows else None


def batches_without_valid_samples(wh: Warehouse) -> list[str]:
    """Batches that had rows but ingested none (every row quarantined)."""
    rows = wh.query("SELECT batch_id FROM batches WHERE n_rows > 0 AND n_ingested + n_duplicates = 0 "
                    "ORDER BY batch_id")
    return [r[0] for r in rows]


def batches_of_samples(wh: Warehouse, sample_ids: list[str]) -> set[str]:
    """The batches these samples were ingested in."""
    return {b for (b,) in wh.query("SELECT DISTINCT batch_id FROM samples WHERE sample_id IN (SELECT unnest(?))",
                                   [sample_ids])}
