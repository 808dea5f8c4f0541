"""Keeping a sample of the rollouts the server scored, most uncertain first, as an ingestion batch.

Of every `window` scored rollouts the capture keeps the `ceil(rate * window)` whose predictions
were least certain (mean predicted std over regions and criteria) and writes them as one batch:

    <home>/batches/capture-<YYYYMMDD>-<HHMMSS>-<n>/manifest.jsonl
    <home>/batches/capture-<YYYYMMDD>-<HHMMSS>-<n>/images/<sha256>.<ext>

in the manifest format `warehouse.ingest` reads (rows with `source`, `edited`, `instruction`,
`sample_id`, optional `editor`, `category`, `metadata`; image paths relative to the manifest).
`metadata` holds the scores, `uncertainty` and `captured_at` (UTC, ISO 8601) that the data
flywheel's sampling policy reads (sfreward.flywheel).
The group id is left to ingestion (hash of source and instruction), the trainer's own group id
is kept in `metadata.trainer_group_id`: trainers reuse ids across steps, the warehouse must not.

Memory is bounded: only the current top-k candidates (encoded bytes as received) are held.
The manifest is written to a temporary name and renamed, so a reader never sees half of it.
"""
from __future__ import annotations

import hashlib
import heapq
import io
import itertools
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from sfreward.inference import NPY_MAGIC, ItemScore, decode_npy
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)

_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


@dataclass
class CaptureConfig:
    rate: float = field(default=0.02, metadata={
        "help": "fraction of scored rollouts kept for annotation, most uncertain first (0 = off)"})
    window: int = field(default=1000, metadata={"help": "rollouts per capture batch"})
    max_age_s: float = 3600.0   # a partial window is written once its oldest candidate is this old

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"capture rate must be in [0, 1], got {self.rate}")
        if self.window < 1:
            raise ValueError(f"capture window must be >= 1, got {self.window}")

    @property
    def keep(self) -> int:
        return 0 if self.rate == 0 else max(1, math.ceil(self.rate * self.window))


@dataclass
class _Candidate:
    uncertainty: float
    source: bytes
    edited: bytes
    instruction: str
    metadata: dict[str, Any]
    editor: str | None
    category: str | None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ext(data: bytes) -> str:
    try:
        fmt = Image.open(io.BytesIO(data)).format or "PNG"
    except Exception:
        fmt = "PNG"
    return _EXT.get(fmt, "png")


def _as_image_file(data: bytes) -> bytes:
    """Ingestion reads image files: raw .npy uploads become PNG (lossless)."""
    if not data.startswith(NPY_MAGIC):
        return data
    buf = io.BytesIO()
    Image.fromarray(decode_npy(data)).save(buf, "PNG")
    return buf.getvalue()


class RolloutCapture:
    """Thread-safe; `offer` is called after each scored group, `flush` on shutdown."""

    def __init__(self, workspace: Workspace, config: CaptureConfig | None = None):
        self.workspace = workspace
        self.config = config or CaptureConfig()
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, _Candidate]] = []   # min-heap: least uncertain on top
        self._seen = 0
        self._window_started = time.monotonic()
        self._counter = itertools.count()
        self.written: list[Path] = []

    @property
    def enabled(self) -> bool:
        return self.config.keep > 0

    def offer(self, source: bytes, edits: list[bytes], scores: list[ItemScore], instruction: str,
              group_id: str | None = None, metadata: dict[str, Any] | None = None) -> Path | None:
        """Consider one scored group; returns the batch directory when this call wrote one."""
        if not self.enabled:
            return None
        meta = metadata or {}
        editor = meta.get("editor") if isinstance(meta.get("editor"), str) and meta["editor"].strip() else None
        category = meta.get("category") if isinstance(meta.get("category"), str) and meta["category"].strip() else None
        # UTC time scored: the flywheel's daily annotation budget counts rollouts by this day.
        captured_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            for edited, s in zip(edits, scores):
                self._seen += 1
                if not s.valid:
                    continue
                u = s.uncertainty
                row_meta = {"captured_by": "sfr-serve", "captured_at": captured_at, "model_version": s.model_version,
                            "uncertainty": u, "trainer_group_id": group_id,
                            "scores": {"overall": s.overall, "naturalness": s.naturalness,
                                       "artifacts": s.artifacts,
                                       "regions": [{"region_id": r.region_id, "kind": r.kind, "bbox": r.bbox,
                                                    "success": r.success, "preserve": r.preserve,
                                                    "success_std": r.success_std,
                                                    "preserve_std": r.preserve_std} for r in s.regions]}}
                cand = _Candidate(u, source, edited, instruction, row_meta, editor, category)
                item = (u, next(self._counter), cand)
                if len(self._heap) < self.config.keep:
                    heapq.heappush(self._heap, item)
                elif u > self._heap[0][0]:
                    heapq.heapreplace(self._heap, item)
            due = self._seen >= self.config.window or (
                self._heap and time.monotonic() - self._window_started >= self.config.max_age_s)
            if not due:
                return None
            taken = self._take()
        return self._write(taken)

    def flush(self) -> Path | None:
        """Write whatever is held now (e.g. at shutdown)."""
        with self._lock:
            taken = self._take()
        return self._write(taken)

    def _take(self) -> list[_Candidate]:
        taken = [c for _, _, c in sorted(self._heap, key=lambda t: (-t[0], t[1]))]
        self._heap = []
        self._seen = 0
        self._window_started = time.monotonic()
        return taken

    def _write(self, cands: list[_Candidate]) -> Path | None:
        if not cands:
            return None
        now = datetime.now(timezone.utc)
        base = self.workspace.batches / f"capture-{now:%Y%m%d-%H%M%S}"
        out = base
        for n in itertools.count(1):  # several windows in one second get their own directory
            out = Path(f"{base}-{n}")
            try:
                out.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        images = out / "images"
        images.mkdir()
        rows = []
        for c in cands:
            names = []
            for data in (_as_image_file(c.source), _as_image_file(c.edited)):
                name = f"images/{_sha(data)}.{_ext(data)}"
                if not (out / name).exists():
                    (out / name).write_bytes(data)
                names.append(name)
            row: dict[str, Any] = {"source": names[0], "edited": names[1], "instruction": c.instruction,
                                   "sample_id": "cap-" + _sha((names[0] + names[1] + c.instruction).encode())[:16],
                                   "metadata": c.metadata}
            if c.editor:
                row["editor"] = c.editor
            if c.category:
                row["category"] = c.category
            rows.append(row)
        tmp = out / ".manifest.jsonl.tmp"
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out / "manifest.jsonl")
        self.written.append(out)
        log.info("captured %d rollouts into %s", len(rows), out)
        return out
