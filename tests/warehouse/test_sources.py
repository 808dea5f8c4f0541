"""Bring your own data: datasets in public schemas (parquet, shards, save_to_disk) built from real
photos with the `datasets` library, ingested by preset and by explicit mapping; counts, image
content and provided masks checked against what was written."""
from __future__ import annotations

import hashlib
import io
import json

import datasets
import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main as sfr
from tests.fixtures.core import photo, recolor
from warehouse import masks
from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore
from warehouse.ingest import IngestConfig, ManifestError, ingest_batch, ingest_path
from warehouse.sources import SourceOptions

NAMES = ("astronaut", "chelsea", "coffee")
SIZE = 64


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def examples(n_per_photo: int = 2) -> list[dict]:
    """Real photos with a recolored box each; the box is the edit mask (bool [H, W])."""
    out = []
    for name in NAMES:
        src = photo(name, SIZE)
        for k in range(n_per_photo):
            box = (4 + 8 * k, 10, 30 + 8 * k, 40)
            mask = np.zeros((SIZE, SIZE), bool)
            mask[box[1]:box[3], box[0]:box[2]] = True
            out.append({"src": png(src), "ed": png(recolor(src, box, channel=k % 3)), "mask": mask,
                        "text": f"make the box in the {name} photo more colorful ({k})"})
    return out


def table(rows: list[dict], names: dict[str, str], mask_as: str | None = None) -> datasets.Dataset:
    """A datasets.Dataset with Image columns under the schema's names."""
    data = {names["source"]: [{"bytes": r["src"], "path": None} for r in rows],
            names["edited"]: [{"bytes": r["ed"], "path": None} for r in rows],
            names["instruction"]: [r["text"] for r in rows]}
    feats = {names["source"]: datasets.Image(), names["edited"]: datasets.Image(),
             names["instruction"]: datasets.Value("string")}
    if mask_as == "image":
        data[names["mask"]] = [{"bytes": png(r["mask"].astype(np.uint8) * 255), "path": None} for r in rows]
        feats[names["mask"]] = datasets.Image()
    elif mask_as == "rle":
        data[names["mask"]] = [masks.encode(r["mask"]) for r in rows]
        feats[names["mask"]] = {"size": datasets.Sequence(datasets.Value("int32")), "counts": datasets.Value("string")}
    return datasets.Dataset.from_dict(data, features=datasets.Features(feats))


def stored(ws, sample_rows) -> dict:
    """sample instruction -> (source sha of the original bytes, edited sha) as ingested."""
    wh = Warehouse.open(ws)
    return {r[0]: (r[1], r[2]) for r in wh.query(
        "SELECT s.instruction, a.original_sha256, b.original_sha256 FROM samples s "
        "JOIN images a ON a.sha256 = s.source_sha256 JOIN images b ON b.sha256 = s.edited_sha256")}


def check_images(ws, rows: list[dict]) -> None:
    got = stored(ws, rows)
    assert got == {r["text"]: (sha(r["src"]), sha(r["ed"])) for r in rows}
    # The stored pixels are the photo's pixels.
    store = LocalImageStore(ws)
    wh = Warehouse.open(ws)
    sid, src_sha = wh.query("SELECT instruction, source_sha256 FROM samples ORDER BY instruction LIMIT 1")[0]
    want = next(r for r in rows if r["text"] == sid)
    with Image.open(store.local_path(src_sha)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(Image.open(io.BytesIO(want["src"]))))


def provided(ws) -> dict[str, tuple[np.ndarray, str, str]]:
    wh = Warehouse.open(ws)
    return {r[0]: (masks.decode(r[1]), r[2], r[3]) for r in wh.query(
        "SELECT s.instruction, m.rle, m.origin, m.column_name FROM provided_masks m "
        "JOIN samples s ON s.sample_id = m.sample_id")}


def test_instructpix2pix_parquet_by_preset(workspace, tmp_path):
    rows = examples()
    path = tmp_path / "ip2p.parquet"
    table(rows, {"source": "input_image", "edited": "edited_image", "instruction": "edit_prompt"}).to_parquet(path)
    s = ingest_path(workspace, path, IngestConfig(source_options=SourceOptions("instructpix2pix")))
    assert (s.rows, s.ingested, s.quarantined) == (6, 6, 0)
    check_images(workspace, rows)
    assert provided(workspace) == {}
    opts = Warehouse.open(workspace).query("SELECT source_kind, source_options FROM batches")
    assert opts == [("parquet", SourceOptions("instructpix2pix").to_json())]


def test_magicbrush_save_to_disk_with_mask_images(workspace, tmp_path):
    rows = examples()
    names = {"source": "source_img", "edited": "target_img", "instruction": "instruction", "mask": "mask_img"}
    dd = datasets.DatasetDict({"train": table(rows[:4], names, "image"), "dev": table(rows[4:], names, "image")})
    dd.save_to_disk(tmp_path / "mb")
    s = ingest_path(workspace, tmp_path / "mb", IngestConfig(source_options=SourceOptions("magicbrush")))
    assert (s.rows, s.ingested, s.quarantined) == (6, 6, 0)
    check_images(workspace, rows)
    got = provided(workspace)
    assert set(got) == {r["text"] for r in rows}
    for r in rows:
        m, origin, col = got[r["text"]]
        assert np.array_equal(m, r["mask"]) and (origin, col) == ("image", "mask_img")
    assert Warehouse.open(workspace).query("SELECT source_kind FROM batches") == [("hf_disk",)]


def test_explicit_map_over_parquet_shards_with_coco_rle_masks(workspace, tmp_path):
    rows = examples()
    names = {"source": "source_image", "edited": "edited_image", "instruction": "edit_prompt", "mask": "edit_region"}
    (tmp_path / "ds" / "data").mkdir(parents=True)
    table(rows[:3], names, "rle").to_parquet(tmp_path / "ds" / "data" / "train-00000-of-00002.parquet")
    table(rows[3:], names, "rle").to_parquet(tmp_path / "ds" / "data" / "train-00001-of-00002.parquet")
    opts = SourceOptions("source-edited", {"mask": "edit_region"})
    s = ingest_path(workspace, tmp_path / "ds", IngestConfig(source_options=opts))
    assert (s.rows, s.ingested, s.quarantined) == (6, 6, 0)
    check_images(workspace, rows)
    got = provided(workspace)
    for r in rows:
        m, origin, col = got[r["text"]]
        assert np.array_equal(m, r["mask"]) and (origin, col) == ("coco_rle", "edit_region")
    # The same dataset again: same batch, nothing new.
    again = ingest_path(workspace, tmp_path / "ds", IngestConfig(source_options=opts))
    assert (again.batch_id, again.ingested, again.duplicates) == (s.batch_id, 0, 6)


def test_save_to_disk_dataset_through_the_cli_with_map_flags(workspace, tmp_path, capsys):
    rows = examples(1)
    table(rows, {"source": "before", "edited": "after", "instruction": "prompt"}).save_to_disk(tmp_path / "one")
    rc = sfr(["--home", str(workspace.home), "ingest", str(tmp_path / "one"), "--map", "source=before",
              "--map", "edited=after", "--map", "instruction=prompt"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["rows"], out["ingested"]) == (3, 3)
    check_images(workspace, rows)


def test_missing_column_fails_at_once_naming_it(workspace, tmp_path, capsys):
    path = tmp_path / "ip2p.parquet"
    table(examples(1), {"source": "input_image", "edited": "edited_image", "instruction": "edit_prompt"}).to_parquet(path)
    with pytest.raises(ManifestError) as e:
        ingest_path(workspace, path, IngestConfig(source_options=SourceOptions("magicbrush")))
    msg = str(e.value)
    assert "'source_img' (for source)" in msg and "'mask_img' (for mask)" in msg
    assert "['input_image', 'edited_image', 'edit_prompt']" in msg and "--schema instructpix2pix" in msg
    assert Warehouse.open(workspace).query("SELECT count(*) FROM batches")[0][0] == 0
    rc = sfr(["--home", str(workspace.home), "ingest", str(path), "--map", "source=nope"])
    err = capsys.readouterr().err
    assert rc == 2 and "column 'nope' (for source)" in err and "not found; its columns are" in err


def test_bad_rows_are_quarantined_and_the_batch_goes_on(workspace, tmp_path):
    rows = examples()
    good = masks.encode(rows[0]["mask"])
    cells = [good, masks.encode(rows[1]["mask"][:32]),                 # wrong size
             {"size": [SIZE, SIZE], "counts": "\x00garbage"},           # bad RLE
             masks.encode(np.zeros((SIZE, SIZE), bool)),                # empty
             None, masks.encode(rows[5]["mask"])]                       # no mask: fine
    names = {"source": "source_image", "edited": "edited_image", "instruction": "edit_prompt"}
    ds = table(rows, names).add_column("mask_rle", [json.dumps(c) if c else None for c in cells])
    ds = ds.map(lambda ex, i: {"source_image": None} if i == 5 else {}, with_indices=True)   # no source image
    ds.to_parquet(tmp_path / "bad.parquet")
    s = ingest_path(workspace, tmp_path / "bad.parquet",
                    IngestConfig(source_options=SourceOptions("source-edited", {"mask": "mask_rle"})))
    assert (s.rows, s.ingested, s.quarantined) == (6, 2, 4)
    reasons = dict(Warehouse.open(workspace).query("SELECT row_number, reason FROM quarantine"))
    assert "is 64x32 but the source image is 64x64" in reasons[2]
    assert "bad COCO RLE" in reasons[3]
    assert "is empty (no edited pixel)" in reasons[4]
    assert "column 'source_image' (source) holds no image" in reasons[6]
    assert set(provided(workspace)) == {rows[0]["text"]}


def test_ingest_batch_reuses_the_recorded_mapping(workspace, tmp_path):
    rows = examples(1)
    names = {"source": "source_img", "edited": "target_img", "instruction": "instruction", "mask": "mask_img"}
    table(rows, names, "image").save_to_disk(tmp_path / "mb")
    from warehouse.ingest import register_batch

    bid = register_batch(workspace, tmp_path / "mb", options=SourceOptions("magicbrush"))
    s = ingest_batch(workspace, bid)   # the Dagster partition path: no options passed
    assert (s.batch_id, s.ingested) == (bid, 3)
    assert len(provided(workspace)) == 3


def test_image_cells_holding_paths_stay_inside_the_dataset_folder(workspace, tmp_path):
    rows = examples(1)
    folder = tmp_path / "paths"
    (folder / "img").mkdir(parents=True)
    for i, r in enumerate(rows):
        (folder / "img" / f"s{i}.png").write_bytes(r["src"])
        (folder / "img" / f"e{i}.png").write_bytes(r["ed"])
    (tmp_path / "outside.png").write_bytes(rows[0]["src"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Struct and plain-string cells cannot share a parquet column: one column of each kind.
    pq.write_table(pa.table({"before": [f"img/s{i}.png" for i in range(2)] + ["../outside.png"],
                             "after": [{"bytes": None, "path": f"img/e{i}.png"} for i in range(3)],
                             "prompt": [r["text"] for r in rows]}), folder / "data.parquet")
    s = ingest_path(workspace, folder, IngestConfig(source_options=SourceOptions(
        columns={"source": "before", "edited": "after", "instruction": "prompt"})))
    assert (s.rows, s.ingested, s.quarantined) == (3, 2, 1)
    check_images(workspace, rows[:2])
    (reason,) = Warehouse.open(workspace).query("SELECT reason FROM quarantine")[0]
    assert "escapes the manifest's directory" in reason
