"""Exports of a dataset version, each with a dataset card (README.md):

Paths come from the dataset contract (warehouse.datasets), which readers use too.
(a) `export_hf`: Hugging Face `datasets` parquet shards exactly per docs/architecture.md
    ("Dataset export"): <home>/datasets/<id>/hf/{split}-00000-of-00001.parquet, written with
    the HF features in the schema metadata so `datasets.load_dataset("parquet", ...)` restores
    the Image and List types. Empty splits get no file.
(b) `export_reward_json`: the region-reward format (docs/spatial-credit.md), JSON lines per
    split in <id>/reward_json/{split}.jsonl, one edited image per line:
      {"sample_id", "group_id", "split", "source", "edited" (paths relative to <id>/),
       "instruction", "category",
       "regions": [{"region_id", "kind", "bbox_2d": [x1, y1, x2, y2], "mask": {size, counts},
                    "score": [success, preserve], "std": [success_std, preserve_std],
                    "n_annotators"}],           # background not in this list
       "background": preserve score of the background region,
       "overall": overall, "quality": [naturalness, artifacts]}
    all scores on 0..25, null when not rated; bbox x2/y2 exclusive, pixels of the source image.
(c) `export_sft`: chat JSONL for fine-tuning a vision-language judge to emit that JSON
    (<id>/sft/{split}.jsonl; {"messages": [...], "images": [source, edited]}, the TRL /
    LLaMA-Factory "messages + images" layout; the assistant turn is the JSON answer without masks).
Images for (b) and (c) are copied once into <id>/images/<sha256>.<ext> so an export directory
is self-contained.
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.curation.config import SPLITS
from warehouse.curation.dataset import DatasetVersion, get_version
from warehouse.datasets import export_dir, split_file_name, version_dir
from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore
from warehouse.workspace import Workspace


@functools.lru_cache(maxsize=1)
def hf_features():
    """The `datasets` Features of the parquet contract (docs/architecture.md, "Dataset export").
    Imported lazily: `datasets` is slow to import and only the HF export needs it."""
    from datasets import Features, Image, List, Value

    F32 = Value("float32")
    return Features({
        "sample_id": Value("string"), "group_id": Value("string"), "source_id": Value("string"),
        "split": Value("string"), "source": Image(), "edited": Image(), "instruction": Value("string"),
        "category": Value("string"), "editor": Value("string"),
        "regions": List({
            "region_id": Value("string"), "kind": Value("string"),
            "mask": {"size": List(Value("int32")), "counts": Value("string")},
            "bbox": List(Value("int32")), "area": Value("int64"),
            "success": F32, "preserve": F32, "success_std": F32, "preserve_std": F32,
            "n_annotators": Value("int32"), "verdict": Value("string"),
            "mask_source": Value("string"),   # proposal | corrected (annotators' fix) | drawn
        }),
        "overall": F32, "naturalness": F32, "artifacts": F32, "n_annotators": Value("int32"),
    })


CHUNK = 2048
JUDGE_SYSTEM = (
    "You are an image-editing judge. Given a source image, an edited image, the edit "
    "instruction and numbered regions (bbox_2d = [x1, y1, x2, y2] in source-image pixels), "
    "answer with JSON only: for each region its [success, preserve] scores, the background "
    "score, the overall score and the [naturalness, artifacts] pair, all on 0..25.")


def _scale_text(cfg: dict) -> str:
    """How this version's stars became scores (versions built before warehouse/scale.py record
    no label_scale: they used reward = 5 x stars)."""
    from warehouse.scale import LEGACY_LABEL_SCALE
    scale = cfg.get("label_scale", LEGACY_LABEL_SCALE)
    if scale == LEGACY_LABEL_SCALE:
        return f"label scale {scale}: 5 x the 1..5 star rating, so 1 star = 5"
    return f"label scale {scale}: (stars - 1) x 6.25, so 1 star = 0 and 5 stars = 25"


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def _none(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 3)


def iter_samples(wh: Warehouse, dataset_id: str, split: str) -> Iterator[list[dict]]:
    """Chunks of samples of one split, each a dict with its regions (ordered, background last).
    One short read per chunk: no connection is held while images are read or files written."""
    ids: list[str] | None = None
    i = 0
    while ids is None or i < len(ids):
        with wh.read() as con:
            if ids is None:   # first chunk: list the split in the same connection
                ids = [r[0] for r in con.execute(
                    "SELECT sample_id FROM dataset_rows WHERE dataset_id = ? AND split = ? ORDER BY sample_id",
                    [dataset_id, split]).fetchall()]
            chunk = ids[i:i + CHUNK]
            i += CHUNK
            if not chunk:
                break
            con.execute("CREATE OR REPLACE TEMP TABLE _ids (sample_id TEXT)")
            con.execute("INSERT INTO _ids SELECT unnest(?)", [chunk])
            cur = con.execute("SELECT r.* FROM dataset_rows r JOIN _ids USING (sample_id) "
                              "WHERE r.dataset_id = ? ORDER BY sample_id", [dataset_id])
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            cur = con.execute("SELECT g.* FROM dataset_regions g JOIN _ids USING (sample_id) "
                              "WHERE g.dataset_id = ? ORDER BY sample_id, ord", [dataset_id])
            cols = [d[0] for d in cur.description]
            regions = [dict(zip(cols, r)) for r in cur.fetchall()]
        by_sample: dict[str, list[dict]] = {}
        for g in regions:
            by_sample.setdefault(g["sample_id"], []).append(g)
        for r in rows:
            r["regions"] = by_sample.get(r["sample_id"], [])
        if rows:
            yield rows


def _record(ws: Workspace, wh: Warehouse, dataset_id: str, fmt: str, path: Path, n_files: int) -> None:
    with wh.write() as con:
        con.execute("INSERT OR REPLACE INTO dataset_exports (dataset_id, format, path, n_files) VALUES (?, ?, ?, ?)",
                    [dataset_id, fmt, ws.relative(path), n_files])


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def export_hf(ws: Workspace, dataset_id: str) -> Path:
    """Write the parquet shards and card; returns <home>/datasets/<id>/hf."""
    wh = Warehouse.open(ws)
    version = get_version(wh, dataset_id)
    out = _fresh_dir(export_dir(ws, dataset_id, "hf"))
    store = LocalImageStore(ws)
    schema = hf_features().arrow_schema
    n_files = 0
    for split in SPLITS:
        if not version.split_counts.get(split):
            continue
        path = out / split_file_name("hf", split)
        with pq.ParquetWriter(path, schema) as writer:
            for chunk in iter_samples(wh, dataset_id, split):
                records = [{
                    "sample_id": r["sample_id"], "group_id": r["group_id"], "source_id": r["source_sha256"],
                    "split": r["split"], "instruction": r["instruction"], "category": r["category"],
                    "editor": r["editor"],
                    "source": {"bytes": store.get(r["source_sha256"]), "path": None},
                    "edited": {"bytes": store.get(r["edited_sha256"]), "path": None},
                    "regions": [{
                        "region_id": g["region_id"], "kind": g["kind"], "mask": json.loads(g["rle"]),
                        "bbox": [g["x1"], g["y1"], g["x2"], g["y2"]], "area": g["area"],
                        "success": _nan(g["success"]), "preserve": _nan(g["preserve"]),
                        "success_std": _nan(g["success_std"]), "preserve_std": _nan(g["preserve_std"]),
                        "n_annotators": g["n_annotators"], "verdict": g["verdict"],
                        "mask_source": g.get("mask_source")} for g in r["regions"]],
                    "overall": _nan(r["overall"]), "naturalness": _nan(r["naturalness"]),
                    "artifacts": _nan(r["artifacts"]), "n_annotators": r["n_annotators"],
                } for r in chunk]
                writer.write_table(pa.Table.from_pylist(records, schema=schema))
        n_files += 1
    write_card(ws, version, out, "hf")
    _record(ws, wh, dataset_id, "hf", out, n_files)
    return out


def _copy_image(store: LocalImageStore, images_dir: Path, sha: str) -> str:
    src = store.local_path(sha)
    dst = images_dir / src.name
    if not dst.exists():
        try:
            os.link(src, dst)         # same filesystem: no copy of the bytes
        except OSError:
            shutil.copyfile(src, dst)
    return f"images/{dst.name}"


def reward_record(r: dict, source: str, edited: str, with_masks: bool = True) -> dict:
    """One sample (as from iter_samples) in the region-reward format."""
    regions, background = [], None
    for g in r["regions"]:
        if g["kind"] == "background":
            background = _none(g["preserve"])
            continue
        reg = {"region_id": g["region_id"], "kind": g["kind"], "bbox_2d": [g["x1"], g["y1"], g["x2"], g["y2"]],
               "score": [_none(g["success"]), _none(g["preserve"])]}
        if with_masks:
            reg |= {"mask": json.loads(g["rle"]), "std": [_none(g["success_std"]), _none(g["preserve_std"])],
                    "n_annotators": g["n_annotators"], "mask_source": g.get("mask_source")}
        regions.append(reg)
    return {"sample_id": r["sample_id"], "group_id": r["group_id"], "split": r["split"], "source": source,
            "edited": edited, "instruction": r["instruction"], "category": r["category"], "regions": regions,
            "background": background, "overall": _none(r["overall"]),
            "quality": [_none(r["naturalness"]), _none(r["artifacts"])]}


def _export_jsonl(ws: Workspace, dataset_id: str, fmt: str, make) -> Path:
    wh = Warehouse.open(ws)
    version = get_version(wh, dataset_id)
    base = version_dir(ws, dataset_id)
    out = _fresh_dir(export_dir(ws, dataset_id, fmt))
    images = base / "images"
    images.mkdir(exist_ok=True)
    store = LocalImageStore(ws)
    n_files = 0
    for split in SPLITS:
        if not version.split_counts.get(split):
            continue
        with open(out / split_file_name(fmt, split), "w") as f:
            for chunk in iter_samples(wh, dataset_id, split):
                for r in chunk:
                    src = "../" + _copy_image(store, images, r["source_sha256"])
                    edt = "../" + _copy_image(store, images, r["edited_sha256"])
                    f.write(json.dumps(make(r, src, edt), allow_nan=False) + "\n")
        n_files += 1
    write_card(ws, version, out, fmt)
    _record(ws, wh, dataset_id, fmt, out, n_files)
    return out


def export_reward_json(ws: Workspace, dataset_id: str) -> Path:
    """Region-reward JSON lines; returns <home>/datasets/<id>/reward_json. Image paths are
    relative to that directory."""
    return _export_jsonl(ws, dataset_id, "reward_json", reward_record)


def sft_record(r: dict, source: str, edited: str) -> dict:
    answer = reward_record(r, source, edited, with_masks=False)
    lines = [f"Instruction: {r['instruction']}", "Regions:"]
    for i, reg in enumerate(answer["regions"]):
        lines.append(f"{i + 1}. {reg['kind']} bbox_2d={reg['bbox_2d']}")
    target = {"regions": [{"bbox_2d": g["bbox_2d"], "score": g["score"]} for g in answer["regions"]],
              "background": answer["background"], "overall": answer["overall"], "quality": answer["quality"]}
    return {"sample_id": r["sample_id"], "images": [source, edited], "messages": [
        {"role": "system", "content": [{"type": "text", "text": JUDGE_SYSTEM}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "\n".join(lines)}]},
        {"role": "assistant", "content": [{"type": "text", "text": json.dumps(target, separators=(",", ":"))}]},
    ]}


def export_sft(ws: Workspace, dataset_id: str) -> Path:
    """Chat JSONL for a VLM judge; returns <home>/datasets/<id>/sft."""
    return _export_jsonl(ws, dataset_id, "sft", sft_record)


def export_all(ws: Workspace, dataset_id: str) -> dict[str, Path]:
    return {"hf": export_hf(ws, dataset_id), "reward_json": export_reward_json(ws, dataset_id),
            "sft": export_sft(ws, dataset_id)}


FORMAT_TEXT = {
    "hf": "Parquet shards with Hugging Face `datasets` features (Image columns `source`, `edited`; "
          "`regions` = list of {region_id, kind, mask (COCO RLE), bbox [x1, y1, x2, y2], area, success, "
          "preserve, success_std, preserve_std, n_annotators, verdict, mask_source: proposal | corrected "
          "(annotators' majority-vote fix of the proposal) | drawn}). Load with "
          "`datasets.load_dataset(\"parquet\", data_files={\"train\": \"train-00000-of-00001.parquet\", ...})`.",
    "reward_json": "JSON lines, one edited image per line: regions with `bbox_2d`, COCO RLE `mask` and "
                   "`score` = [success, preserve]; `background`; `overall`; `quality` = [naturalness, artifacts].",
    "sft": "Chat JSONL (`messages` + `images`) to fine-tune a vision-language judge to answer the "
           "region-reward JSON (without masks).",
}


def write_card(ws: Workspace, version: DatasetVersion, out: Path, fmt: str) -> Path:
    """README.md dataset card: counts, splits, exclusions, agreement, config, license."""
    cfg = version.config
    files = sorted(p.name for p in out.iterdir() if p.name != "README.md")
    header = ["---", f"license: {cfg.get('license', 'other').lower()}", f"pretty_name: {version.name} {version.dataset_id}"]
    if fmt == "hf":
        header += ["configs:", "- config_name: default", "  data_files:"]
        header += [f"  - split: {f.split('-')[0]}\n    path: {f}" for f in files if f.endswith(".parquet")]
    header.append("---")
    alpha = version.agreement.get("alpha", {})
    lines = header + [
        f"# {version.name} — dataset version `{version.dataset_id}`", "",
        f"License: {cfg.get('license')}", "",
        f"Format ({fmt}): {FORMAT_TEXT[fmt]}", "",
        f"Scores are on 0..25 ({_scale_text(cfg)}, statistic: "
        f"{cfg.get('score_stat')}); NaN/null = not rated. Splits never share a source image, an edited "
        "image or a GRPO group.", "",
        "## Counts", "", "| split | samples |", "|---|---|",
        *[f"| {s} | {version.split_counts.get(s, 0)} |" for s in SPLITS],
        f"| total | {version.n_rows} |", "", f"Regions: {version.n_regions}", "",
        "## Exclusions", "", "| item:reason | count |", "|---|---|",
        *[f"| {k} | {n} |" for k, n in sorted(version.exclusion_counts.items())], "",
        "## Agreement (Krippendorff's alpha, ordinal)", "", "| dimension | alpha |", "|---|---|",
        *[f"| {d} | {'n/a' if a is None else f'{a:.3f}'} |" for d, a in sorted(alpha.items())], "",
        f"Flagged annotators: {', '.join(version.agreement.get('flagged_annotators', [])) or 'none'}", "",
        "## Files", "", *[f"- `{f}`" for f in files], "",
        "## Curation config", "", "```json", json.dumps(cfg, indent=2, sort_keys=True), "```", "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
