"""Round trip of each export: parquet through `datasets.load_dataset` (offline), the region-reward
JSON and the SFT chat JSONL; every mask decoded and compared to the warehouse."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.curation import make_annotated_warehouse
from warehouse import masks
from warehouse.curation import CurationConfig, build_dataset, export_all
from warehouse.curation.checks import check_labels_complete, check_masks_decode
from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore
from warehouse.workspace import Workspace


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One warehouse, one version, all three exports, shared by the tests of this module."""
    base = tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(base / "hf"))
        mp.setenv("HF_DATASETS_CACHE", str(base / "hf" / "datasets"))
        ws = Workspace.open(base / "home")
        aw = make_annotated_warehouse(ws, n_samples=24, n_annotators=3, noise=0.4, seed=0)
        v = build_dataset(ws, CurationConfig(dedupe_hamming=-1, fractions=(0.5, 0.25, 0.25)))
        yield ws, aw, v, export_all(ws, v.dataset_id), base / "hf"


def _warehouse_regions(ws, dataset_id):
    return {(r["sample_id"], r["region_id"]): r for r in Warehouse.open(ws).query_dicts(
        "SELECT * FROM dataset_regions WHERE dataset_id = ?", [dataset_id])}


def test_hf_parquet_round_trip(built, monkeypatch):
    import datasets

    curation_ws, aw, v, paths, hf_cache = built
    monkeypatch.setenv("HF_HOME", str(hf_cache))
    files = {s: str(paths["hf"] / f"{s}-00000-of-00001.parquet") for s in ("train", "validation", "test")}
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(hf_cache / "datasets"))
    assert {s: len(ds[s]) for s in ds} == v.split_counts
    feats = ds["train"].features
    assert isinstance(feats["source"], datasets.Image) and isinstance(feats["edited"], datasets.Image)
    assert isinstance(feats["regions"], datasets.List)
    assert feats["regions"].feature["success"].dtype == "float32"
    assert feats["regions"].feature["mask"]["size"].feature.dtype == "int32"
    store = LocalImageStore(curation_ws)
    wh_regions = _warehouse_regions(curation_ws, v.dataset_id)
    rows = {r["sample_id"]: r for r in Warehouse.open(curation_ws).query_dicts(
        "SELECT * FROM dataset_rows WHERE dataset_id = ?", [v.dataset_id])}
    n_masks = 0
    for split in ds:
        for ex in ds[split]:
            row = rows[ex["sample_id"]]
            assert ex["split"] == split == row["split"] and ex["source_id"] == row["source_sha256"]
            src = np.asarray(Image.open(io.BytesIO(store.get(row["source_sha256"]))))
            assert np.array_equal(np.asarray(ex["source"]), src)
            assert np.array_equal(np.asarray(ex["edited"]),
                                  np.asarray(Image.open(io.BytesIO(store.get(row["edited_sha256"])))))
            assert ex["overall"] == pytest.approx(row["overall"])
            assert [g["kind"] for g in ex["regions"]][-1] == "background"
            for g in ex["regions"]:
                w = wh_regions[(ex["sample_id"], g["region_id"])]
                m = masks.decode(g["mask"])
                truth = next(r["mask"] for r in aw.regions[ex["sample_id"]] if r["region_id"] == g["region_id"])
                assert np.array_equal(m, truth) and np.array_equal(m, masks.decode(w["rle"]))
                assert g["bbox"] == [w["x1"], w["y1"], w["x2"], w["y2"]] == list(masks.bbox_xyxy(m))
                assert g["area"] == int(m.sum())
                assert g["success"] == pytest.approx(w["success"]) and g["preserve"] == pytest.approx(w["preserve"])
                assert 0 <= g["success"] <= 25   # 1 star = 0 (warehouse/scale.py)
                n_masks += 1
    assert n_masks == v.n_regions
    card = (paths["hf"] / "README.md").read_text()
    assert "license: cc-by-4.0" in card and v.dataset_id in card and f"| train | {v.split_counts['train']} |" in card
    assert "| success |" in card and '"seed": 0' in card
    assert check_masks_decode(curation_ws, v.dataset_id)[0]
    assert check_labels_complete(curation_ws, v.dataset_id)[0]


def test_reward_json_round_trip(built):
    curation_ws, _, v, paths, _ = built
    wh_regions = _warehouse_regions(curation_ws, v.dataset_id)
    n = 0
    for split in ("train", "validation", "test"):
        for line in (paths["reward_json"] / f"{split}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            n += 1
            assert rec["split"] == split
            assert Image.open(paths["reward_json"] / rec["edited"]).size == (64, 64)
            bg = next(w for (s, _), w in wh_regions.items() if s == rec["sample_id"] and w["kind"] == "background")
            assert rec["background"] == pytest.approx(bg["preserve"])
            assert len(rec["quality"]) == 2 and all(5 <= q <= 25 for q in rec["quality"])
            assert len(rec["regions"]) == 2
            for reg in rec["regions"]:
                w = wh_regions[(rec["sample_id"], reg["region_id"])]
                assert reg["bbox_2d"] == [w["x1"], w["y1"], w["x2"], w["y2"]]
                assert reg["score"] == pytest.approx([w["success"], w["preserve"]])
                assert np.array_equal(masks.decode(reg["mask"]), masks.decode(w["rle"]))
    assert n == v.n_rows
    assert "region-reward" in (paths["reward_json"] / "README.md").read_text() or \
        "bbox_2d" in (paths["reward_json"] / "README.md").read_text()


def test_sft_round_trip(built):
    _, _, v, paths, _ = built
    recs = [json.loads(line) for s in ("train", "validation", "test")
            for line in (paths["sft"] / f"{s}.jsonl").read_text().splitlines()]
    assert len(recs) == v.n_rows
    reward = {json.loads(line)["sample_id"]: json.loads(line) for s in ("train", "validation", "test")
              for line in (paths["reward_json"] / f"{s}.jsonl").read_text().splitlines()}
    for rec in recs:
        roles = [m["role"] for m in rec["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert [c["type"] for c in rec["messages"][1]["content"]] == ["image", "image", "text"]
        assert all((paths["sft"] / p).is_file() for p in rec["images"])
        answer = json.loads(rec["messages"][2]["content"][0]["text"])
        want = reward[rec["sample_id"]]
        assert answer["overall"] == want["overall"] and answer["background"] == want["background"]
        assert [r["bbox_2d"] for r in answer["regions"]] == [r["bbox_2d"] for r in want["regions"]]
        assert [r["score"] for r in answer["regions"]] == [r["score"] for r in want["regions"]]
        for r in want["regions"]:   # the prompt names every region's box
            assert str(r["bbox_2d"]) in rec["messages"][1]["content"][2]["text"]
