"""Bring your own data: public editing datasets read through a column mapping.

Inputs: a parquet file, a folder of parquet shards (any nesting, e.g. a Hub repo's
`data/train-00000-of-00002.parquet`, which `datasets.load_dataset(path)` also reads), or a
folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (every split, in the
order of its `dataset_dict.json`). A mapping says which column holds each of our fields
(`source=input_image`); a named preset (`PRESETS`) fills in the usual names of a public
schema, and explicit `--map` entries override it.

Streaming: parquet is read `BATCH_ROWS` rows at a time (`ParquetFile.iter_batches`, only the
mapped columns); Arrow files of `save_to_disk` are IPC streams read one record batch at a time.
Memory depends on the batch size (and, for Arrow, on the batch size the writer used), never on
the number of rows (benchmarks/bench_byod_memory.py).

Image cells: a Hugging Face Image struct {"bytes", "path"}, raw bytes, or a path (relative to
the dataset folder, never outside it, like manifest paths). A `mask` column holds an image
(white = edited area, as MagicBrush's `mask_img`) or a COCO RLE ({"size": [h, w], "counts"},
as a struct or JSON text); it must match the source image's size and becomes the sample's
`provided_masks` row, the `edit` region the proposer starts from.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from warehouse import masks as maskcodec

# Our fields (targets of a mapping) and the ones a mapping must name.
FIELDS = ("source", "edited", "instruction", "mask", "sample_id", "group_id", "editor", "category", "metadata")
REQUIRED = ("source", "edited", "instruction")
# Named presets: our field -> the schema's column.
PRESETS: dict[str, dict[str, str]] = {
    "sfr": {"source": "source", "edited": "edited", "instruction": "instruction"},
    "instructpix2pix": {"source": "input_image", "edited": "edited_image", "instruction": "edit_prompt"},
    "magicbrush": {"source": "source_img", "edited": "target_img", "instruction": "instruction",
                   "mask": "mask_img"},
    "source-edited": {"source": "source_image", "edited": "edited_image", "instruction": "edit_prompt"},
}
BATCH_ROWS = 16          # rows per read: a few images each, so memory stays small
MASK_THRESHOLD = 127     # mask images: gray level above this is the edited area


class MappingError(ValueError):
    """The mapping (or the input as a whole) does not fit: raised before any row is read."""


@dataclass
class SourceOptions:
    """How to read a dataset: a preset and/or explicit columns (explicit entries win)."""

    schema: str | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schema is not None and self.schema not in PRESETS:
            raise MappingError(f"unknown schema {self.schema!r}; known presets: {sorted(PRESETS)}")
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise MappingError(f"--map names unknown field(s) {unknown}; map any of {list(FIELDS)}")

    @property
    def is_default(self) -> bool:
        return self.schema is None and not self.columns

    def resolved(self) -> dict[str, str]:
        """field -> column. Without a preset, unmapped required fields keep their own name."""
        base = dict(PRESETS[self.schema]) if self.schema else {k: k for k in REQUIRED}
        base.update(self.columns)
        return base

    def to_json(self) -> str:
        return json.dumps({"schema": self.schema, "columns": dict(sorted(self.columns.items()))}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "SourceOptions":
        d = json.loads(text) if text else {}
        return cls(d.get("schema"), dict(d.get("columns") or {}))


def parse_map(items: list[str] | None) -> dict[str, str]:
    """['source=input_image', ...] -> {'source': 'input_image', ...}."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, col = item.partition("=")
        if not sep or not key.strip() or not col.strip():
            raise MappingError(f"--map {item!r} is not FIELD=COLUMN (e.g. --map source=input_image)")
        out[key.strip()] = col.strip()
    return out


# --------------------------------------------------------------------------- files
def is_hf_disk(path: Path) -> bool:
    """A folder written by Dataset(Dict).save_to_disk."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def arrow_files(path: Path) -> list[Path]:
    """The Arrow files of a save_to_disk folder, in dataset order (splits as listed)."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        return [f for s in splits for f in arrow_files(path / s)]
    state = json.loads((path / "state.json").read_text())
    return [path / d["filename"] for d in state.get("_data_files", [])]


def data_files(path: Path) -> list[Path]:
    """The files that make up an input (what its batch id hashes)."""
    if path.is_file():
        return [path]
    if is_hf_disk(path):
        return arrow_files(path)
    return sorted(path.rglob("*.parquet"))


def _schemas(files: list[Path], arrow: bool) -> list[tuple[Path, list[str]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    for f in files:
        try:
            if arrow:
                with pa.OSFile(str(f), "rb") as fh:
                    names = pa.ipc.open_stream(fh).schema.names
            else:
                names = pq.ParquetFile(f).schema_arrow.names
        except Exception as e:
            raise MappingError(f"{f}: not a readable {'Arrow' if arrow else 'parquet'} file ({e})") from e
        out.append((f, names))
    return out


def suggest_schema(columns: list[str]) -> str | None:
    """The preset whose columns all exist (the most specific one), if any."""
    fits = [name for name, cols in PRESETS.items() if set(cols.values()) <= set(columns)]
    return max(fits, key=lambda n: len(PRESETS[n]), default=None)


def check_mapping(path: Path, options: SourceOptions) -> tuple[list[Path], bool, dict[str, str]]:
    """Files, whether they are Arrow, and the field -> column map; raises MappingError at once
    when a mapped column is missing from any file (naming it and listing those that exist)."""
    if path.is_file() and path.suffix != ".parquet":
        raise MappingError(f"{path}: --map and --schema apply to parquet files, folders of parquet shards and "
                           "save_to_disk folders; a JSONL manifest uses our field names")
    files = data_files(path)
    if not files:
        raise MappingError(f"{path}: no .parquet files and no save_to_disk dataset found")
    arrow = is_hf_disk(path)
    cols = options.resolved()
    for f, names in _schemas(files, arrow):
        missing = [(k, c) for k, c in cols.items() if c not in names]
        if missing:
            what = ", ".join(f"{c!r} (for {k})" for k, c in missing)
            hint = suggest_schema(names)
            hint = f"; these columns fit --schema {hint}" if hint and hint != options.schema else ""
            raise MappingError(f"{f}: column {what} not found; its columns are {names}. Map ours with "
                               f"--map FIELD=COLUMN or pick a preset with --schema {{{','.join(PRESETS)}}}{hint}")
    return files, arrow, cols


def iter_batches(files: list[Path], arrow: bool, columns: list[str], batch_rows: int = BATCH_ROWS) -> Iterator[list[dict]]:
    """Rows as dicts, `batch_rows` at a time (Arrow: at most one writer batch in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for f in files:
        if arrow:
            with pa.OSFile(str(f), "rb") as fh:
                for batch in pa.ipc.open_stream(fh):
                    batch = batch.select(columns)
                    for i in range(0, batch.num_rows, batch_rows):
                        yield batch.slice(i, batch_rows).to_pylist()
        else:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns):
                yield batch.to_pylist()


# --------------------------------------------------------------------------- rows
def image_cell(cell: Any) -> tuple[bytes | None, str | None]:
    """An image cell -> (inline bytes, path)."""
    if isinstance(cell, dict):
        return cell.get("bytes"), cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell), None
    if isinstance(cell, str):
        return None, cell
    return None, None


def read_mapped(path: Path, options: SourceOptions) -> Iterator:
    """RawRows (warehouse.ingest) of a mapped dataset; checks the mapping before yielding."""
    from warehouse.ingest import RawRow

    files, arrow, cols = check_mapping(path, options)
    wanted = list(dict.fromkeys(cols.values()))

    def rows() -> Iterator[RawRow]:
        number = 0
        for records in iter_batches(files, arrow, wanted):
            for rec in records:
                number += 1
                yield _raw_row(RawRow, number, rec, cols)

    return rows()


def _raw_row(RawRow, number: int, rec: dict, cols: dict[str, str]):
    fields: dict[str, Any] = {}
    error = None
    src_bytes = ed_bytes = None
    for key, col in cols.items():
        v = rec.get(col)
        if key in ("source", "edited"):
            data, p = image_cell(v)
            if data is None and not p:
                error = error or f"column {col!r} ({key}) holds no image in this row"
            fields[key] = p
            if key == "source":
                src_bytes = data
            else:
                ed_bytes = data
        elif key == "mask":
            continue
        elif key == "metadata" and isinstance(v, str):
            try:
                fields[key] = json.loads(v)
            except json.JSONDecodeError:
                fields[key] = v  # the validator says it must be an object
        elif key in ("sample_id", "group_id", "editor", "category") and isinstance(v, (int, np.integer)):
            fields[key] = str(v)
        elif v is not None:
            fields[key] = v
    text = json.dumps({**fields, "columns": cols}, default=str)  # what quarantine shows (no bytes)
    row = RawRow(number, text, fields, error, source_bytes=src_bytes, edited_bytes=ed_bytes)
    if "mask" in cols:
        row.mask = (cols["mask"], rec.get(cols["mask"]))
    return row


# --------------------------------------------------------------------------- provided masks
def decode_mask(cell: Any, column: str, base: Path, max_pixels: int) -> tuple[np.ndarray, str]:
    """A mask cell -> (bool [H, W], origin). Raises ValueError naming the column."""
    if isinstance(cell, str) and cell.lstrip().startswith("{"):
        try:
            cell = json.loads(cell)
        except json.JSONDecodeError as e:
            raise ValueError(f"mask column {column!r}: not valid COCO RLE JSON ({e.msg})") from None
    if isinstance(cell, dict) and "counts" in cell and "size" in cell:
        try:
            _check_runs(cell)
            return maskcodec.decode(cell), "coco_rle"
        except (maskcodec.MaskError, ValueError, TypeError) as e:
            raise ValueError(f"mask column {column!r}: bad COCO RLE: {e}") from None
    data, p = image_cell(cell)
    if data is None and p:
        from warehouse.ingest import RowRejected, _resolve_inside

        try:
            data = _resolve_inside(base, p, f"mask ({column})").read_bytes()
        except RowRejected as e:
            raise ValueError(str(e)) from None
    if data is None:
        raise ValueError(f"mask column {column!r} holds neither an image nor a COCO RLE in this row")
    from warehouse.images import ImageRejected, open_image

    try:
        with open_image(data, f"mask column {column!r}", max_pixels) as im:
            return np.asarray(im.convert("L")) > MASK_THRESHOLD, "image"
    except ImageRejected as e:
        raise ValueError(str(e)) from None
    except Exception as e:
        raise ValueError(f"mask column {column!r}: not a decodable image ({type(e).__name__}: {e})") from None


def _check_runs(rle: dict) -> None:
    """pycocotools decodes any string without complaint; a real RLE's runs cover h * w pixels."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = list(counts) if isinstance(counts, list) else _string_runs(
        counts.decode("ascii") if isinstance(counts, bytes) else str(counts))
    if any(int(r) < 0 for r in runs) or sum(int(r) for r in runs) != h * w:
        raise ValueError(f"its runs cover {sum(int(r) for r in runs)} pixels, not {h}x{w} = {h * w}")


def _string_runs(s: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString)."""
    runs: list[int] = []
    i = 0
    while i < len(s):
        x, k, more = 0, 0, True
        while more:
            if i >= len(s) or not 48 <= ord(s[i]) < 112:
                raise ValueError("counts is not a COCO RLE string")
            c = ord(s[i]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i, k = i + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def mask_record(mask: np.ndarray, origin: str, column: str, source_hw: tuple[int, int]) -> dict:
    """Check a provided mask against the source image (height, width); -> provided_masks row."""
    if mask.shape != tuple(source_hw):
        raise ValueError(f"mask column {column!r} is {mask.shape[1]}x{mask.shape[0]} but the source image is "
                         f"{source_hw[1]}x{source_hw[0]}; a provided mask must be on the source's grid")
    if not mask.any():
        raise ValueError(f"mask column {column!r} is empty (no edited pixel); drop the column or fix the mask")
    x1, y1, x2, y2 = maskcodec.bbox_xyxy(mask)
    return {"origin": origin, "column_name": column, "rle": maskcodec.to_json(maskcodec.encode(mask)),
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "area": int(mask.sum())}


def write_provided_masks(con, batch_id: str, accepted: list) -> None:
    """Insert the provided masks of accepted rows (inside the chunk's transaction)."""
    rows = [(p.sample_id, batch_id, m["origin"], m["column_name"], m["rle"], m["x1"], m["y1"], m["x2"],
             m["y2"], m["area"]) for p in accepted if (m := getattr(p, "provided_mask", None))]
    if rows:
        con.executemany("INSERT INTO provided_masks (sample_id, batch_id, origin, column_name, rle, x1, y1, x2, y2, "
                        "area) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)


def attach_mask(row, prepared, known: dict[str, tuple], base: Path, max_pixels: int) -> None:
    """Validate a row's provided mask against its (validated) source image and attach the
    provided_masks record to `prepared`. No-op for rows without a mask. Raises ValueError."""
    if getattr(row, "mask", None) is None or row.mask[1] is None:
        return
    column, cell = row.mask
    mask, origin = decode_mask(cell, column, base, max_pixels)
    prepared.provided_mask = mask_record(mask, origin, column, _source_hw(row, prepared, known, base))


def _source_hw(row, prepared, known: dict[str, tuple], base: Path) -> tuple[int, int]:
    """(height, width) of the stored source image: from this row's new image record, or from the
    images seen before (keyed by the hash of the bytes as received)."""
    from warehouse.imagestore import sha256_bytes
    from warehouse.ingest import _resolve_inside

    for rec in prepared.images:
        if rec["sha256"] == prepared.source_sha:
            return int(rec["height"]), int(rec["width"])
    data = row.source_bytes if row.source_bytes is not None else \
        _resolve_inside(base, row.fields.get("source"), "source").read_bytes()
    hit = known.get(sha256_bytes(data))
    if hit is None:
        raise ValueError("the source image's size is unknown; rerun the ingest")
    return int(hit[2]), int(hit[1])
