"""Ingestion of real photos (scikit-image) and every kind of bad row the issue lists."""
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.core import make_samples, photo, recolor, write_manifest
from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore
from warehouse.ingest import ManifestError, ingest_path


def _good_pair(folder, name="chelsea", size=96):
    folder.mkdir(parents=True, exist_ok=True)
    src = photo(name, size)
    Image.fromarray(src).save(folder / "src.png")
    Image.fromarray(recolor(src, (10, 10, 40, 40))).save(folder / "ed.png")
    return {"source": "src.png", "edited": "ed.png", "instruction": "recolor the patch"}


def _ingest_rows(workspace, folder, rows):
    return ingest_path(workspace, write_manifest(folder, rows))


def _quarantine(workspace):
    return Warehouse.open(workspace).query("SELECT row_number, reason FROM quarantine ORDER BY row_number")


def test_ingest_real_photos(workspace, sample_manifest):
    s = ingest_path(workspace, sample_manifest)
    assert (s.rows, s.ingested, s.duplicates, s.quarantined) == (4, 4, 0, 0)
    wh = Warehouse.open(workspace)
    # 2 sources + 4 edits, each stored once; 2 groups of 2 rollouts (same source + instruction).
    assert wh.query("SELECT count(*) FROM images") == [(6,)]
    assert wh.query("SELECT count(*), count(DISTINCT group_id) FROM samples") == [(4, 2)]
    assert wh.query("SELECT count(*) FROM groups") == [(2,)]
    # Stored pixels are the pixels we wrote.
    sha = wh.query("SELECT edited_sha256 FROM samples WHERE metadata LIKE '%[10, 20, 60, 70]%' "
                   "AND instruction LIKE '%astronaut%'")[0][0]
    got = np.asarray(Image.open(LocalImageStore(workspace).local_path(sha)))
    assert np.array_equal(got, recolor(photo("astronaut", 128), (10, 20, 60, 70), 0))


def test_reingest_adds_nothing(workspace, sample_manifest):
    first = ingest_path(workspace, sample_manifest)
    before = Warehouse.open(workspace).counts()
    again = ingest_path(workspace, sample_manifest)
    assert again.batch_id == first.batch_id
    assert (again.ingested, again.duplicates) == (0, 4)
    assert Warehouse.open(workspace).counts() == before


def test_duplicate_rows_within_a_manifest(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    s = _ingest_rows(workspace, tmp_path / "m", [row, row])
    assert (s.ingested, s.duplicates, s.quarantined) == (1, 1, 0)


def test_missing_file(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    s = _ingest_rows(workspace, tmp_path / "m", [row, {**row, "edited": "nope.png"}])
    assert (s.ingested, s.quarantined) == (1, 1)
    assert "does not exist" in _quarantine(workspace)[0][1]


def test_truncated_png(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    data = (tmp_path / "m" / "ed.png").read_bytes()
    (tmp_path / "m" / "trunc.png").write_bytes(data[: len(data) // 2])
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "edited": "trunc.png"}, row])
    assert (s.ingested, s.quarantined) == (1, 1)
    assert "corrupt or truncated" in _quarantine(workspace)[0][1]


def test_zero_byte_file(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    (tmp_path / "m" / "empty.png").write_bytes(b"")
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "source": "empty.png"}])
    assert s.quarantined == 1
    assert "empty (0 bytes)" in _quarantine(workspace)[0][1]


def test_text_file_named_png(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    (tmp_path / "m" / "notes.png").write_text("this is not an image\n")
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "edited": "notes.png"}])
    assert s.quarantined == 1
    assert "not a recognized image" in _quarantine(workspace)[0][1]


def _png_header_only(width, height):
    """A PNG whose header declares a huge size (a decompression bomb's signature)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_huge_declared_size_refused_before_decoding(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    (tmp_path / "m" / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "edited": "bomb.png"}])
    assert s.quarantined == 1
    assert "decompression bomb" in _quarantine(workspace)[0][1]


def test_mismatched_sizes(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    Image.fromarray(photo("chelsea", 64)).save(tmp_path / "m" / "small.png")
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "edited": "small.png"}])
    assert s.quarantined == 1
    assert "96x96 but edited is 64x64" in _quarantine(workspace)[0][1]


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "CMYK", "P"])
def test_modes_converted_to_rgb_with_note(workspace, tmp_path, mode):
    row = _good_pair(tmp_path / "m")
    src = Image.open(tmp_path / "m" / "src.png")
    if mode == "I;16":
        gray = np.asarray(src.convert("L")).astype(np.uint16) * 257
        conv = Image.fromarray(gray)
        assert conv.mode == "I;16"
    else:
        conv = src.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    conv.save(tmp_path / "m" / f"src_{mode.replace(';', '')}.{fmt.lower()}", format=fmt)
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "source": f"src_{mode.replace(';', '')}.{fmt.lower()}"}])
    assert (s.ingested, s.quarantined) == (1, 0)
    wh = Warehouse.open(workspace)
    (sha, note), = wh.query("SELECT i.sha256, s.note FROM samples s JOIN images i ON i.sha256 = s.source_sha256")
    assert f"converted {mode}" in note
    stored = Image.open(LocalImageStore(workspace).local_path(sha))
    assert stored.mode == "RGB" and stored.size == (96, 96)
    if mode == "I;16":  # 16-bit scaled, not clipped: gray levels survive
        assert np.abs(np.asarray(stored)[..., 0].astype(int) - np.asarray(src.convert("L")).astype(int)).max() <= 1


def test_empty_instruction(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "instruction": "   "}, {k: v for k, v in row.items() if k != "instruction"}])
    assert s.quarantined == 2
    assert all("instruction" in r for _, r in _quarantine(workspace))


def test_path_traversal(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "source": "../../etc/passwd"},
                                                 {**row, "source": "/etc/passwd"}])
    assert s.quarantined == 2
    reasons = [r for _, r in _quarantine(workspace)]
    assert "escapes the manifest's directory" in reasons[0] and "absolute" in reasons[1]


def test_symlink_escaping_the_manifest_tree(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    (tmp_path / "outside.png").write_bytes((tmp_path / "m" / "src.png").read_bytes())
    (tmp_path / "m" / "link.png").symlink_to(tmp_path / "outside.png")
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "source": "link.png"}])
    assert s.quarantined == 1


def test_malformed_json_line_does_not_stop_the_batch(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    s = _ingest_rows(workspace, tmp_path / "m", ['{"source": "src.png", ', json.dumps(row), "[1, 2]"])
    assert (s.rows, s.ingested, s.quarantined) == (3, 1, 2)
    q = _quarantine(workspace)
    assert [n for n, _ in q] == [1, 3]
    assert "malformed JSON on line 1" in q[0][1] and "not a JSON object" in q[1][1]


def test_group_must_share_source_and_instruction(workspace, tmp_path):
    row = _good_pair(tmp_path / "m")
    Image.fromarray(photo("coffee", 96)).save(tmp_path / "m" / "other.png")
    s = _ingest_rows(workspace, tmp_path / "m", [{**row, "group_id": "g1"},
                                                 {**row, "source": "other.png", "group_id": "g1"}])
    assert (s.ingested, s.quarantined) == (1, 1)
    assert "GRPO group" in _quarantine(workspace)[0][1]


def test_bad_rows_never_touch_stored_rows(workspace, tmp_path, sample_manifest):
    ingest_path(workspace, sample_manifest)
    before = Warehouse.open(workspace).query("SELECT * FROM samples ORDER BY sample_id")
    row = _good_pair(tmp_path / "m")
    _ingest_rows(workspace, tmp_path / "m", [{**row, "edited": "missing.png"}, "{oops"])
    assert Warehouse.open(workspace).query("SELECT * FROM samples ORDER BY sample_id") == before


def test_parquet_dataset_with_image_columns(workspace, tmp_path):
    import datasets

    src = photo("rocket", 80)
    rows = {"source": [], "edited": [], "instruction": [], "group_id": []}
    for k in range(3):
        rows["source"].append(Image.fromarray(src))
        rows["edited"].append(Image.fromarray(recolor(src, (5 * k, 5, 30 + 5 * k, 30), k)))
        rows["instruction"].append("paint the patch")
        rows["group_id"].append("rocket-group")
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({
        "source": datasets.Image(), "edited": datasets.Image(), "instruction": datasets.Value("string"),
        "group_id": datasets.Value("string")}))
    (tmp_path / "hf").mkdir()
    ds.to_parquet(str(tmp_path / "hf" / "train-00000.parquet"))
    s = ingest_path(workspace, tmp_path / "hf")
    assert (s.rows, s.ingested, s.quarantined) == (3, 3, 0)
    wh = Warehouse.open(workspace)
    assert wh.query("SELECT count(DISTINCT group_id), count(DISTINCT source_sha256) FROM samples") == [(1, 1)]


def test_unreadable_input_is_a_manifest_error(workspace, tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        ingest_path(workspace, tmp_path / "nothing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ManifestError, match="expected a .jsonl"):
        ingest_path(workspace, tmp_path / "x.csv")
