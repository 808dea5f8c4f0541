"""One bad row never sinks a batch (issue 18): rows that break the parser or the path handling,
any unexpected error on a row, oversized or non-image files checked from their header, and
bounds on text fields. Each is quarantined with its reason; the rows around it are ingested."""
import json
import os
import tracemalloc

import pytest
from PIL import Image

from tests.fixtures.core import photo, recolor, write_manifest
from warehouse import ingest as ingest_mod
from warehouse.db import Warehouse
from warehouse.ingest import IngestConfig, ingest_path


def _pairs(folder, n):
    """n good rows (distinct edits of one real photo)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = photo("coffee", 64)
    Image.fromarray(src).save(folder / "src.png")
    rows = []
    for k in range(n):
        Image.fromarray(recolor(src, (4 * k, 4, 4 * k + 20, 30), channel=k % 3)).save(folder / f"ed{k}.png")
        rows.append({"source": "src.png", "edited": f"ed{k}.png", "instruction": "make the cup redder",
                     "sample_id": f"s{k}", "group_id": "g-cup"})
    return rows


def _quarantine(workspace):
    return Warehouse.open(workspace).query("SELECT row_number, reason FROM quarantine ORDER BY row_number")


def test_deep_json_and_nul_path_rows_are_quarantined_and_the_batch_goes_on(workspace, tmp_path):
    good = _pairs(tmp_path / "m", 3)
    deep = '{"source": ' + "[" * 100_000 + "]" * 100_000 + "}"          # RecursionError in json
    nul = json.dumps({**good[0], "sample_id": "s-nul", "edited": "ed1.png\x00.png"})   # ValueError in resolve()
    lines = [json.dumps(good[0]), deep, json.dumps(good[1]), nul, json.dumps(good[2])]
    manifest = write_manifest(tmp_path / "m", lines)
    s = ingest_path(workspace, manifest)
    assert (s.rows, s.ingested, s.quarantined) == (5, 3, 2)
    q = _quarantine(workspace)
    assert [n for n, _ in q] == [2, 4]
    assert "line 2 is nested too deeply" in q[0][1]
    assert "`edited` path" in q[1][1] and "contains a NUL character" in q[1][1]
    wh = Warehouse.open(workspace)
    assert sorted(r[0] for r in wh.query("SELECT sample_id FROM samples")) == ["s0", "s1", "s2"]
    # A rerun is the same batch: nothing added, nothing lost, the batch record has its counts.
    again = ingest_path(workspace, manifest)
    assert (again.rows, again.ingested, again.duplicates, again.quarantined) == (5, 0, 3, 2)
    assert wh.query("SELECT n_rows, n_ingested, n_quarantined FROM batches WHERE batch_id = ?",
                    [s.batch_id]) == [(5, 3, 2)]
    assert len(_quarantine(workspace)) == 2


def test_any_unexpected_error_on_a_row_quarantines_only_that_row(workspace, tmp_path, monkeypatch):
    rows = _pairs(tmp_path / "m", 3)
    real = ingest_mod.load_image

    def buggy(data, name, max_pixels):  # a bug that only this row's image triggers
        if "ed1.png" in name:
            raise ZeroDivisionError("division by zero in a decoder")
        return real(data, name, max_pixels)

    monkeypatch.setattr(ingest_mod, "load_image", buggy)
    s = ingest_path(workspace, write_manifest(tmp_path / "m", rows))
    assert (s.rows, s.ingested, s.quarantined) == (3, 2, 1)
    [(n, reason)] = _quarantine(workspace)
    assert n == 2 and reason == "unexpected error on this row (ZeroDivisionError: division by zero in a decoder)"


def _sparse(path, size, head=b""):
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # a hole: no disk space, reads as zeros


@pytest.mark.parametrize("size, head, why", [
    (1_500_000_000, b"\x89PNG\r\n\x1a\n", "file is 1,500,000,000 bytes, over the limit of 268,435,456 bytes"),
    (200_000_000, b"", "not a recognized image file (its first bytes 00 00 00 00 00 00 00 00"),
    (200_000_000, b"\x89PNG\r\n\x1a\n", "not a recognized image file (wrong magic bytes or not an image)"),
])
def test_big_fake_image_is_refused_from_its_header_without_reading_it(workspace, tmp_path, size, head, why):
    rows = _pairs(tmp_path / "m", 2)
    _sparse(tmp_path / "m" / "big.png", size, head)
    manifest = write_manifest(tmp_path / "m", [rows[0], {**rows[1], "edited": "big.png"}])
    tracemalloc.start()
    try:
        s = ingest_path(workspace, manifest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (s.ingested, s.quarantined) == (1, 1)
    [(_, reason)] = _quarantine(workspace)
    assert reason.startswith("edited 'big.png': ") and why in reason
    # The summary names the problem, not just the file ("source 'big.png'" before).
    assert list(s.reasons) == [reason.removeprefix("edited 'big.png': ")[:77] + "..."
                               if len(reason.removeprefix("edited 'big.png': ")) >= 80
                               else reason.removeprefix("edited 'big.png': ")]
    assert peak < 20 << 20, f"ingest allocated {peak:,} bytes for a {size:,}-byte file it refuses"


def test_text_fields_are_bounded(workspace, tmp_path):
    rows = _pairs(tmp_path / "m", 8)
    lines = [
        json.dumps({**rows[0], "instruction": "x" * 2000}),                       # at the limit: kept
        json.dumps({**rows[1], "instruction": "x" * 2001}),
        json.dumps({**rows[2], "sample_id": "s" * 129}),
        json.dumps({**rows[3], "group_id": "g" * 200_000}),
        json.dumps({**rows[4], "instruction": "make it red\x00"}),
        json.dumps({**rows[5], "editor": "ed\x00itor"}),
        json.dumps({**rows[6], "metadata": {"score": 1.0}})[:-1] + ', "extra": NaN}',  # NaN outside metadata too
        json.dumps({**rows[7], "metadata": {"blob": "m" * 20_000}}),
        json.dumps({**rows[7], "sample_id": "s-inf"})[:-1] + ', "metadata": {"x": Infinity}}',
        json.dumps({**rows[7], "sample_id": "s-nulmeta", "metadata": {"note": "a\x00b"}}),
    ]
    s = ingest_path(workspace, write_manifest(tmp_path / "m", lines))
    assert (s.rows, s.ingested, s.quarantined) == (10, 1, 9)
    reasons = dict(_quarantine(workspace))
    assert "`instruction` has 2,001 characters; at most 2,000" in reasons[2]
    assert "`sample_id` has 129 characters; at most 128" in reasons[3]
    assert "`group_id` has 200,000 characters; at most 128" in reasons[4]
    assert "`instruction` contains a NUL character" in reasons[5]
    assert "`editor` contains a NUL character" in reasons[6]
    assert "line 7 holds non-standard JSON (NaN is not valid JSON)" in reasons[7]
    assert "`metadata` is 20,012 bytes as JSON; at most 16,384" in reasons[8]
    assert "line 9 holds non-standard JSON (Infinity is not valid JSON)" in reasons[9]
    assert "`metadata` contains a NUL character" in reasons[10]
    stored = Warehouse.open(workspace).query("SELECT length(instruction) FROM samples")
    assert stored == [(2000,)]


def test_parquet_metadata_with_nan_is_refused(workspace, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _pairs(tmp_path / "m", 2)
    data = {k: [] for k in ("source", "edited", "instruction", "sample_id", "metadata")}
    for r, meta in zip(rows, ({"score": 0.5}, {"score": float("nan")})):
        data["source"].append({"bytes": (tmp_path / "m" / r["source"]).read_bytes(), "path": None})
        data["edited"].append({"bytes": (tmp_path / "m" / r["edited"]).read_bytes(), "path": None})
        data["instruction"].append(r["instruction"])
        data["sample_id"].append(r["sample_id"])
        data["metadata"].append(meta)
    pq.write_table(pa.table(data), tmp_path / "d.parquet")
    s = ingest_path(workspace, tmp_path / "d.parquet", IngestConfig(workers=1))
    assert (s.ingested, s.quarantined) == (1, 1)
    [(n, reason)] = _quarantine(workspace)
    assert n == 2 and "`metadata` holds a value that is not standard JSON" in reason


def test_one_decompression_bomb_guard_for_ingest_and_the_server(tmp_path):
    """Ingest (warehouse.images.load_image) and the server (sfreward.inputs.decode_image) refuse
    the same declared size through the same function, with the same message."""
    from sfreward.inputs import InvalidInput, decode_image
    from warehouse.images import ImageTooLarge, load_image

    Image.new("RGB", (4000, 3000)).save(tmp_path / "big.png")   # 12 MP, tiny file
    data = (tmp_path / "big.png").read_bytes()
    with pytest.raises(ImageTooLarge) as ing:
        load_image(data, "big", max_pixels=10_000_000)
    with pytest.raises(InvalidInput) as srv:
        decode_image(data, "big", max_pixels=10_000_000)
    assert str(ing.value) == str(srv.value) == (
        "big: declared size 4000x3000 = 12,000,000 pixels exceeds the limit of 10,000,000 "
        "(possible decompression bomb); resize it or raise max_pixels")
    assert os.path.getsize(tmp_path / "big.png") < 100_000


def test_the_same_pixel_limit_for_npy_arrays_and_provided_mask_images(tmp_path):
    """A .npy upload (its shape is its header) and a mask image given with a dataset are
    refused by the same rule and message as an encoded image (warehouse.images)."""
    import io

    import numpy as np

    from sfreward.inputs import InvalidInput, decode_image
    from warehouse.images import DEFAULT_MAX_PIXELS
    from warehouse.sources import decode_mask

    buf = io.BytesIO()
    np.save(buf, np.zeros((300, 400, 3), np.uint8), allow_pickle=False)
    with pytest.raises(InvalidInput) as npy:
        decode_image(buf.getvalue(), "edits[0]", max_pixels=100_000)
    assert str(npy.value) == ("edits[0]: declared size 400x300 = 120,000 pixels exceeds the limit of 100,000 "
                              "(possible decompression bomb); resize it or raise max_pixels")
    Image.new("L", (400, 300)).save(tmp_path / "mask.png")
    with pytest.raises(ValueError, match="mask column 'm': declared size 400x300 = 120,000 pixels exceeds"):
        decode_mask({"bytes": (tmp_path / "mask.png").read_bytes()}, "m", tmp_path, 100_000)
    mask, origin = decode_mask({"bytes": (tmp_path / "mask.png").read_bytes()}, "m", tmp_path, DEFAULT_MAX_PIXELS)
    assert mask.shape == (300, 400) and origin == "image" and not mask.any()
