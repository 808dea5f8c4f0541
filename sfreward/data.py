"""Reading the curation export (docs/architecture.md, "Dataset export") for training and
evaluation. It sits beside `sfreward.train` and `sfreward.evaluate`, which both use it (so neither
imports the other's package for it).

A row that cannot be used (undecodable image, mask of the wrong size, no regions) is skipped
and listed in `RegionDataset.skipped` with the reason; it never stops the run.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image

from warehouse import masks as mask_codec
from warehouse.datasets import split_path
from sfreward.model.model import kind_ids

log = logging.getLogger(__name__)


def _image(cell, name: str, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """HF Image struct -> uint8 [3, size, size] and the original (H, W)."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if data is None and isinstance(cell, dict) and cell.get("path"):
        data = Path(cell["path"]).read_bytes()
    if data is None:
        raise ValueError(f"{name}: no image bytes")
    im = Image.open(io.BytesIO(data)).convert("RGB")
    hw = (im.height, im.width)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1), hw


@dataclass
class Sample:
    """One decoded row. Shapes: source/edited uint8 [3, S, S]; masks float [K, S, S] (pixel
    coverage after resizing); targets float [K, 2] (success, preserve; 0..25, NaN = missing);
    image_targets float [3] (overall, naturalness, artifacts)."""
    index: int
    sample_id: str
    group_id: str
    instruction: str
    source: torch.Tensor
    edited: torch.Tensor
    masks: torch.Tensor
    targets: torch.Tensor
    image_targets: torch.Tensor
    region_ids: list[str]
    kinds: list[str]


def decode_row(row: dict, index: int, size: int, label_mode: str = "region") -> Sample:
    src, hw = _image(row.get("source"), "source", size)
    edt, hw_e = _image(row.get("edited"), "edited", size)
    if hw != hw_e:
        raise ValueError(f"source is {hw} but edited is {hw_e}")
    regions = row.get("regions") or []
    if not regions:
        raise ValueError("no regions")
    ms, tg = [], []
    for j, r in enumerate(regions):
        try:  # the declared size is checked against the image before decoding
            m = mask_codec.decode(r["mask"], expected_size=hw)
        except mask_codec.MaskError as e:
            raise ValueError(f"region {j}: {e}") from None
        mt = torch.from_numpy(m).float()[None, None]
        ms.append(F.interpolate(mt, size=(size, size), mode="area")[0, 0] if hw != (size, size) else mt[0, 0])
        tg.append([_f(r.get("success")), _f(r.get("preserve"))])
    image_t = torch.tensor([_f(row.get("overall")), _f(row.get("naturalness")), _f(row.get("artifacts"))])
    targets = torch.tensor(tg, dtype=torch.float32)
    if label_mode == "image":
        targets = torch.full_like(targets, float(image_t[0]))
    return Sample(index=index, sample_id=str(row["sample_id"]), group_id=str(row.get("group_id") or row["sample_id"]),
                  instruction=str(row.get("instruction") or ""), source=src, edited=edt,
                  masks=torch.stack(ms), targets=targets, image_targets=image_t,
                  region_ids=[str(r.get("region_id") or f"{row['sample_id']}:{j}") for j, r in enumerate(regions)],
                  kinds=[str(r.get("kind") or "") for r in regions])


def _f(v) -> float:
    return float("nan") if v is None else float(v)


class RegionDataset:
    """One split of an export. `region_key(id)` maps region ids to stable ints (shared
    region sets across a group's rollouts give the same key: the ranking pairs)."""

    def __init__(self, data_dir: str | Path, split: str, image_size: int, label_mode: str = "region",
                 preload: bool = True):
        self.path = split_path(data_dir, split)
        self.size, self.label_mode = image_size, label_mode
        self.rows = pq.read_table(self.path).to_pylist()
        self.skipped: list[tuple[str, str]] = []
        self.samples: list[Sample | None] = []
        keep = []
        for i, row in enumerate(self.rows):
            try:
                s = decode_row(row, i, image_size, label_mode)
            except Exception as e:  # one bad row must not stop training
                sid = str(row.get("sample_id", f"row {i}"))
                self.skipped.append((sid, f"{type(e).__name__}: {e}"))
                log.warning("skipping sample %s of %s: %s", sid, self.path.name, e)
                continue
            keep.append(i)
            self.samples.append(s if preload else None)
        self.rows = [self.rows[i] for i in keep]
        if not preload:
            self.samples = [None] * len(self.rows)
        if not self.rows:
            raise ValueError(f"{self.path}: no usable samples ({len(self.skipped)} skipped)")
        ids = sorted({rid for r in self.rows for rid in _region_ids(r)})
        self._keys = {rid: k for k, rid in enumerate(ids)}
        self.n_regions = [len(r["regions"]) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Sample:
        s = self.samples[i]
        if s is None:
            s = decode_row(self.rows[i], i, self.size, self.label_mode)
        s.index = i
        return s

    def region_key(self, rid: str) -> int:
        return self._keys[rid]


def _region_ids(row: dict) -> list[str]:
    return [str(r.get("region_id") or f"{row['sample_id']}:{j}") for j, r in enumerate(row["regions"])]


def collate(samples: list[Sample], dataset: RegionDataset) -> dict[str, torch.Tensor | list]:
    """Pack samples: sources/edits float [B, 3, S, S] in [0, 1]; masks [R, S, S];
    region_image [R]; targets [R, 2]; image_targets [B, 3]; region_key [R];
    region_sample [R] (dataset index, for "different rollout" in ranking pairs); region_kind [R]
    (model.KIND_IDS)."""
    k = torch.tensor([len(s.region_ids) for s in samples])
    return {
        "sources": torch.stack([s.source for s in samples]).float() / 255.0,
        "edits": torch.stack([s.edited for s in samples]).float() / 255.0,
        "instructions": [s.instruction for s in samples],
        "masks": torch.cat([s.masks for s in samples]),
        "region_image": torch.repeat_interleave(torch.arange(len(samples)), k),
        "targets": torch.cat([s.targets for s in samples]),
        "image_targets": torch.stack([s.image_targets for s in samples]),
        "region_key": torch.tensor([dataset.region_key(r) for s in samples for r in s.region_ids]),
        "region_sample": torch.repeat_interleave(torch.tensor([s.index for s in samples]), k),
        "region_kind": kind_ids([kd for s in samples for kd in s.kinds]),
    }
