"""Ingestion of editing samples into the warehouse.

Inputs: a JSONL manifest (one row per sample: `source`, `edited`, `instruction`, optional
`sample_id`, `group_id`, `editor`, `category`, `metadata`; image paths relative to the
manifest's directory and never outside it), or a Hugging Face dataset in parquet (a file or a
directory of shards) with Image columns `source` and `edited`. Other column names, presets of
public schemas, `save_to_disk` folders and masks that come with the data: warehouse.sources.

Every row is validated; a bad row goes to `quarantine` with its reason and the batch goes on,
whatever the row provokes (only the workspace's own OSErrors, disk full or read-only, stop a
batch). Image files are checked from their size, magic bytes and header before being read
whole. Text is bounded (docs/hostile-inputs.md): instruction <= 2,000 characters, ids, editor
and category <= 128, metadata <= 16 KiB of standard JSON (no NaN/Infinity), no NUL anywhere.
Images are stored content-addressed, samples/groups are written in one transaction per chunk,
so a crash never leaves half a chunk visible and a rerun picks up where it stopped. The batch id
is a hash of the input's bytes: re-ingesting the same manifest is the same batch and adds
nothing (rows whose images were seen before are recognized from their file hash alone,
without decoding).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from warehouse import sources
from warehouse.db import Warehouse, insert_rows
from warehouse.images import DEFAULT_MAX_PIXELS, HEAD_BYTES, ImageRejected, load_image
from warehouse.imagestore import LocalImageStore, sha256_bytes
from warehouse.rowchecks import (DEFAULT_MAX_FILE_BYTES, NonStandardJSON, RowRejected, check_head, check_text,
                                 loads_row, metadata_json, read_checked)
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)

OPTIONAL_TEXT = ("sample_id", "group_id", "editor", "category")
KNOWN_KEYS = {"source", "edited", "instruction", "metadata", *OPTIONAL_TEXT}
MAX_ROW_TEXT = 10_000


class ManifestError(ValueError):
    """The input as a whole cannot be read (not a single bad row)."""


@dataclass
class IngestConfig:
    # Help text: the CLI and the Dagster run config are built from these fields (pipelines/configs.py).
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={
        "help": "refuse images above this many pixels (decompression bombs)"})
    max_file_bytes: int = field(default=DEFAULT_MAX_FILE_BYTES, metadata={
        "help": "refuse image files larger than this many bytes, before reading them"})
    chunk_size: int = field(default=128, metadata={"help": "rows per warehouse transaction"})
    workers: int = field(default=2, metadata={"help": "threads decoding and hashing images"})
    source_options: sources.SourceOptions | None = None   # column mapping / preset (None: ours)


@dataclass
class RawRow:
    number: int                    # 1-based line / row number in the input
    text: str                      # the row as received (for quarantine)
    fields: dict[str, Any] | None  # parsed fields, None when the row is not parseable
    error: str | None = None
    source_bytes: bytes | None = None   # parquet: bytes come inline
    edited_bytes: bytes | None = None
    mask: tuple[str, Any] | None = None  # (column, cell) of a provided edit mask (sources.py)


@dataclass
class IngestSummary:
    batch_id: str
    source: str
    rows: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "source": self.source, "rows": self.rows,
                "ingested": self.ingested, "duplicates": self.duplicates,
                "quarantined": self.quarantined, "quarantine_reasons": self.reasons}


# --------------------------------------------------------------------------- reading inputs
def batch_id_for(path: Path) -> str:
    """Content hash of the input (a file, or every parquet file of a directory)."""
    h = hashlib.sha256()
    for f in sources.data_files(path):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return "b-" + h.hexdigest()[:16]


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                fields = loads_row(text)
            except json.JSONDecodeError as e:
                yield RawRow(number, text, None, f"malformed JSON on line {number}: {e.msg}")
                continue
            except NonStandardJSON as e:
                yield RawRow(number, text, None, f"line {number} holds non-standard JSON ({e}); "
                                                 "use null or a string instead")
                continue
            except RecursionError:
                yield RawRow(number, text, None, f"line {number} is nested too deeply to parse")
                continue
            if not isinstance(fields, dict):
                yield RawRow(number, text, None, f"line {number} is not a JSON object")
                continue
            yield RawRow(number, text, fields)


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not files:
        raise ManifestError(f"{path}: no .parquet files found")
    number = 0
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:
            raise ManifestError(f"{f}: not a readable parquet file ({e})") from e
        missing = {"source", "edited", "instruction"} - set(pf.schema_arrow.names)
        if missing:
            raise ManifestError(f"{f}: parquet is missing required columns {sorted(missing)}; other column "
                                "names: map them with --map FIELD=COLUMN or --schema PRESET (warehouse.sources)")
        for batch in pf.iter_batches(batch_size=64):
            for rec in batch.to_pylist():
                number += 1
                src_bytes, src_path = sources.image_cell(rec.get("source"))
                ed_bytes, ed_path = sources.image_cell(rec.get("edited"))
                fields = {k: rec.get(k) for k in KNOWN_KEYS if k in rec}
                fields["source"], fields["edited"] = src_path, ed_path
                text = json.dumps({k: v for k, v in fields.items()}, default=str)
                yield RawRow(number, text, fields, source_bytes=src_bytes, edited_bytes=ed_bytes)


def read_input(path: Path, options: sources.SourceOptions | None = None) -> tuple[str, Iterator[RawRow]]:
    if not path.exists():
        raise ManifestError(f"{path}: no such file or directory")
    if (options and not options.is_default) or sources.is_hf_disk(path):
        try:  # the mapping is checked against every file before a row is read
            return ("hf_disk" if sources.is_hf_disk(path) else "parquet"), \
                sources.read_mapped(path, options or sources.SourceOptions())
        except sources.MappingError as e:
            raise ManifestError(str(e)) from None
    if path.is_dir() or path.suffix == ".parquet":
        return "parquet", _read_parquet(path)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl", _read_jsonl(path)
    raise ManifestError(f"{path}: expected a .jsonl manifest, a .parquet file or a directory of parquet shards")


# --------------------------------------------------------------------------- validating rows
@dataclass
class Prepared:
    """A validated row, ready to write."""
    number: int
    text: str
    sample_id: str
    group_id: str
    instruction: str
    editor: str | None
    category: str | None
    metadata: str | None
    images: list[dict]             # image rows to insert (new images only)
    source_sha: str
    edited_sha: str
    note: str | None
    provided_mask: dict | None = None   # provided_masks row (sources.attach_mask)


def _resolve_inside(base: Path, rel: Any, key: str) -> Path:
    if not isinstance(rel, str) or not rel.strip():
        raise RowRejected(f"`{key}` must be a non-empty path string")
    if "\x00" in rel:  # resolve() raises ValueError on it
        raise RowRejected(f"`{key}` path {rel[:200]!r} contains a NUL character")
    p = Path(rel)
    if p.is_absolute():
        raise RowRejected(f"`{key}` path {rel!r} is absolute; paths must be relative to the manifest")
    try:
        full = (base / p).resolve()
        full.relative_to(base)
    except ValueError:
        raise RowRejected(f"`{key}` path {rel[:200]!r} escapes the manifest's directory") from None
    except OSError as e:  # e.g. a name too long, a symlink loop
        raise RowRejected(f"`{key}` path {rel[:200]!r} cannot be resolved ({e.strerror or e})") from None
    try:
        if not full.is_file():
            raise RowRejected(f"`{key}` file {rel!r} does not exist")
    except OSError as e:
        raise RowRejected(f"`{key}` path {rel[:200]!r} cannot be read ({e.strerror or e})") from None
    return full


class _Validator:
    def __init__(self, base: Path, store: LocalImageStore, wh: Warehouse, cfg: IngestConfig):
        self.base, self.store, self.wh, self.cfg = base, store, wh, cfg

    def _image(self, row: RawRow, key: str, known: dict[str, tuple]) -> tuple[str, tuple[int, int], dict | None, str | None]:
        inline = row.source_bytes if key == "source" else row.edited_bytes
        if inline is not None:
            data, name = inline, f"{key} (row {row.number})"
            check_head(len(data), data[:HEAD_BYTES], name, self.cfg.max_file_bytes)
        else:
            path = _resolve_inside(self.base, row.fields.get(key), key)
            name = f"{key} {row.fields.get(key)!r}"
            try:
                data = read_checked(path, name, self.cfg.max_file_bytes, self.cfg.max_pixels)
            except OSError as e:  # unreadable input: this row only
                raise RowRejected(f"{name}: cannot read ({e.strerror or e})") from None
        original_sha = sha256_bytes(data)
        hit = known.get(original_sha)
        if hit is not None:  # seen before: no decode needed
            sha, w, h, note = hit
            return sha, (w, h), None, note
        try:
            img = load_image(data, name, self.cfg.max_pixels)
        except ImageRejected as e:
            raise RowRejected(str(e)) from None
        sha, uri = self.store.put(img.stored, img.format)
        rec = {"sha256": sha, "original_sha256": original_sha, "uri": uri, "width": img.width,
               "height": img.height, "format": img.format, "original_mode": img.original_mode,
               "n_bytes": len(img.stored), "note": img.note}
        return sha, (img.width, img.height), rec, (f"{key}: {img.note}" if img.note else None)

    def prepare(self, row: RawRow, known: dict[str, tuple]) -> Prepared:
        if row.error:
            raise RowRejected(row.error)
        f = row.fields
        unknown = set(f) - KNOWN_KEYS
        if unknown:
            raise RowRejected(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(KNOWN_KEYS)}")
        instruction = f.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise RowRejected("`instruction` is missing or empty")
        check_text("instruction", instruction)
        for k in OPTIONAL_TEXT:
            v = f.get(k)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise RowRejected(f"`{k}` must be a non-empty string when given")
            if v is not None:
                check_text(k, v)
        metadata = f.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise RowRejected("`metadata` must be a JSON object when given")
        meta_text = metadata_json(metadata) if metadata else None
        src_sha, src_size, src_rec, src_note = self._image(row, "source", known)
        ed_sha, ed_size, ed_rec, ed_note = self._image(row, "edited", known)
        if src_size != ed_size:
            raise RowRejected(
                f"source is {src_size[0]}x{src_size[1]} but edited is {ed_size[0]}x{ed_size[1]}; "
                "an edit must keep the source's size")
        instruction = instruction.strip()
        sample_id = f.get("sample_id") or "s-" + _h(src_sha, ed_sha, instruction)
        group_id = f.get("group_id") or "g-" + _h(src_sha, instruction)
        notes = "; ".join(n for n in (src_note, ed_note) if n) or None
        return Prepared(row.number, row.text, sample_id, group_id, instruction, f.get("editor"),
                        f.get("category"), meta_text,
                        [r for r in (src_rec, ed_rec) if r], src_sha, ed_sha, notes)


def _h(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- writing
def _known_images(wh: Warehouse) -> dict[str, tuple]:
    rows = wh.query("SELECT original_sha256, sha256, width, height, note FROM images")
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def _write_chunk(wh: Warehouse, batch_id: str, ok: list[Prepared], bad: list[tuple[RawRow, str]],
                 summary: IngestSummary) -> None:
    """One transaction per chunk; lookups and inserts are set-based (DuckDB is slow row by row)."""
    with wh.write() as con:
        numbers = [r.number for r, _ in bad] + [p.number for p in ok]
        if numbers:  # a rerun re-evaluates rows: keep one quarantine record per row
            con.execute("DELETE FROM quarantine WHERE batch_id = ? AND list_contains(?, row_number)",
                        [batch_id, numbers])
        existing = {r[0]: tuple(r[1:]) for r in con.execute(
            "SELECT sample_id, source_sha256, edited_sha256, instruction FROM samples "
            "WHERE list_contains(?, sample_id)", [[p.sample_id for p in ok]]).fetchall()}
        groups = {r[0]: tuple(r[1:]) for r in con.execute(
            "SELECT group_id, source_sha256, instruction FROM groups WHERE list_contains(?, group_id)",
            [[p.group_id for p in ok]]).fetchall()}
        quarantine = [(r.number, r.text, reason) for r, reason in bad]
        images: dict[str, dict] = {}
        new_groups, new_samples, accepted = [], [], []
        for p in ok:
            for img in p.images:
                images.setdefault(img["sha256"], img)
            if p.sample_id in existing:
                if existing[p.sample_id] != (p.source_sha, p.edited_sha, p.instruction):
                    reason = f"sample_id {p.sample_id!r} already exists with different images or instruction"
                    quarantine.append((p.number, p.text, reason))
                    _count(summary, reason)
                else:
                    summary.duplicates += 1
                    accepted.append(p)
                continue
            g = groups.get(p.group_id)
            if g is None:
                groups[p.group_id] = (p.source_sha, p.instruction)
                new_groups.append({"group_id": p.group_id, "source_sha256": p.source_sha,
                                   "instruction": p.instruction})
            elif g != (p.source_sha, p.instruction):
                reason = (f"group_id {p.group_id!r} already holds rollouts of another source image or "
                          "instruction; a GRPO group shares both")
                quarantine.append((p.number, p.text, reason))
                _count(summary, reason)
                continue
            existing[p.sample_id] = (p.source_sha, p.edited_sha, p.instruction)
            accepted.append(p)
            new_samples.append({"sample_id": p.sample_id, "batch_id": batch_id, "group_id": p.group_id,
                                "source_sha256": p.source_sha, "edited_sha256": p.edited_sha,
                                "instruction": p.instruction, "editor": p.editor, "category": p.category,
                                "metadata": p.metadata, "note": p.note})
            summary.ingested += 1
        for table, rows, conflict in (("images", list(images.values()), "ON CONFLICT DO NOTHING"),
                                      ("groups", new_groups, ""), ("samples", new_samples, "")):
            if rows:
                cols = list(rows[0])
                insert_rows(con, table, cols, [tuple(r.get(c) for c in cols) for r in rows], conflict)
        sources.write_provided_masks(con, batch_id, accepted)
        for number, text, reason in quarantine:
            con.execute("INSERT INTO quarantine (batch_id, row_number, row_text, reason) VALUES (?, ?, ?, ?)",
                        [batch_id, number, text[:MAX_ROW_TEXT], reason])


# "source 'x.png': " / "edited (row 3): " at the start of a reason names the input, not the problem.
_NAME_PREFIX = re.compile(r"^(?:source|edited) (?:'.*?'|\".*?\"|\(row \d+\)): ")


def _count(summary: IngestSummary, reason: str) -> None:
    """Counts per kind of problem: the reason without the input's name, cut at 80 characters."""
    summary.quarantined += 1
    key = _NAME_PREFIX.sub("", reason, count=1)
    key = key if len(key) < 80 else key[:77] + "..."
    summary.reasons[key] = summary.reasons.get(key, 0) + 1


def register_batch(ws: Workspace, path: str | Path, kind: str | None = None,
                   options: sources.SourceOptions | None = None) -> str:
    """Record an input as a batch (no ingestion yet) and return its id. Idempotent; a mapping
    given now is recorded (replacing an earlier one) for `ingest_batch` reruns."""
    p = Path(path).expanduser().resolve()
    src_kind, _ = read_input(p, options)
    batch_id = batch_id_for(p)
    wh = Warehouse.open(ws)
    with wh.write() as con:
        con.execute("INSERT INTO batches (batch_id, source_uri, source_kind) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING", [batch_id, str(p), kind or src_kind])
        if options is not None and not options.is_default:
            con.execute("UPDATE batches SET source_options = ? WHERE batch_id = ?", [options.to_json(), batch_id])
    return batch_id


def ingest_path(ws: Workspace, path: str | Path, config: IngestConfig | None = None,
                progress: Callable[[int], None] | None = None) -> IngestSummary:
    """Ingest a manifest or parquet dataset as one batch; returns this run's counts."""
    cfg = config or IngestConfig()
    p = Path(path).expanduser().resolve()
    kind, rows = read_input(p, cfg.source_options)
    batch_id = register_batch(ws, p, options=cfg.source_options)
    wh = Warehouse.open(ws)
    store = LocalImageStore(ws)
    base = p if p.is_dir() else p.parent
    validator = _Validator(base, store, wh, cfg)
    known = _known_images(wh)
    summary = IngestSummary(batch_id=batch_id, source=str(p))

    def check(row: RawRow) -> tuple[RawRow, Prepared | None, str | None]:
        try:
            prepared = validator.prepare(row, known)
            try:
                sources.attach_mask(row, prepared, known, base, cfg.max_pixels)
            except ValueError as e:  # a provided mask that does not fit: this row only
                raise RowRejected(str(e)) from None
            return row, prepared, None
        except RowRejected as e:
            return row, None, str(e)
        except OSError:
            # Reading a row's files is caught above (RowRejected): an OSError here is the
            # workspace's (disk full, read-only store). It stops the batch; chunks committed so
            # far stay, and a rerun continues from there.
            raise
        except Exception as e:  # anything else a row provokes is that row's problem only
            log.warning("row %d: unexpected %s while validating it", row.number, type(e).__name__)
            return row, None, f"unexpected error on this row ({type(e).__name__}: {str(e)[:300]})"

    with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        for chunk in _chunks(rows, cfg.chunk_size):
            ok, bad = [], []
            for row, prepared, error in pool.map(check, chunk):
                summary.rows += 1
                if error is not None:
                    bad.append((row, error))
                    _count(summary, error)
                else:
                    ok.append(prepared)
                    for img in prepared.images:
                        known[img["original_sha256"]] = (img["sha256"], img["width"], img["height"], img["note"])
            _write_chunk(wh, batch_id, ok, bad, summary)
            if progress:
                progress(len(chunk))
    with wh.write() as con:
        con.execute(
            "UPDATE batches SET n_rows = ?, n_ingested = (SELECT count(*) FROM samples WHERE batch_id = ?), "
            "n_duplicates = ?, n_quarantined = (SELECT count(*) FROM quarantine WHERE batch_id = ?) "
            "WHERE batch_id = ?", [summary.rows, batch_id, summary.duplicates, batch_id, batch_id])
    log.info("batch %s: %d rows, %d ingested, %d duplicates, %d quarantined", batch_id, summary.rows,
             summary.ingested, summary.duplicates, summary.quarantined)
    return summary


def ingest_batch(ws: Workspace, batch_id: str, config: IngestConfig | None = None) -> IngestSummary:
    """Ingest a batch registered earlier (the Dagster partition path)."""
    wh = Warehouse.open(ws)
    row = wh.query("SELECT source_uri, source_options FROM batches WHERE batch_id = ?", [batch_id])
    if not row:
        raise ManifestError(f"batch {batch_id!r} is not registered; run `sfr ingest PATH` or drop the "
                            f"manifest into {ws.home / 'incoming'}")
    config = config or IngestConfig()
    if config.source_options is None and row[0][1]:  # the mapping it was registered with
        config = dataclasses.replace(config, source_options=sources.SourceOptions.from_json(row[0][1]))
    summary = ingest_path(ws, row[0][0], config)
    if summary.batch_id != batch_id:
        raise ManifestError(f"batch {batch_id!r}: its input {row[0][0]} changed since it was registered "
                            f"(now batch {summary.batch_id}); the new content was ingested as that batch")
    return summary


def _chunks(it: Iterator[RawRow], n: int) -> Iterator[list[RawRow]]:
    chunk: list[RawRow] = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
