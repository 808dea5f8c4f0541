"""Hostile images (issue 9): each gets a clear quarantine reason; nothing stored is lost."""
import io

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.core import photo, write_manifest
from warehouse.db import Warehouse
from warehouse.images import ImageRejected, load_image
from warehouse.ingest import ingest_path


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_animated_gif_refused():
    frames = [Image.fromarray(photo("chelsea", 64)), Image.fromarray(photo("coffee", 64))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageRejected, match="multi-frame image \\(2 frames\\)"):
        load_image(buf.getvalue(), "anim.gif")


def test_wrong_magic_bytes():
    data = _png(Image.fromarray(photo("chelsea", 64)))
    with pytest.raises(ImageRejected, match="not a recognized image"):
        load_image(b"GIF89a" + data[6:], "fake.png")


def test_huge_exif_is_survived_and_stripped():
    img = Image.fromarray(photo("coffee", 64))
    exif = Image.Exif()
    exif[0x010E] = "A" * 60_000  # ImageDescription: a 60 kB EXIF block
    data = _png(img, format="JPEG", exif=exif.tobytes())
    checked = load_image(data, "exif.jpg")
    assert (checked.width, checked.height) == (64, 64)


def test_exif_rotation_is_applied():
    img = Image.fromarray(photo("coffee", 64)[:, :48])  # 48 wide, 64 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    checked = load_image(_png(img, format="JPEG", exif=exif.tobytes()), "rot.jpg")
    assert (checked.width, checked.height) == (64, 48)
    assert "EXIF orientation applied" in checked.note


def test_tiny_image_refused():
    with pytest.raises(ImageRejected, match="smaller than"):
        load_image(_png(Image.new("RGB", (4, 4))), "tiny.png")


def test_float_image_refused():
    arr = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    data = _png(Image.fromarray(arr), format="TIFF")
    with pytest.raises(ImageRejected, match="floating-point"):
        load_image(data, "float.tif")


def test_hostile_corpus_in_one_batch_keeps_the_good_rows(workspace, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    good = photo("astronaut", 64)
    Image.fromarray(good).save(folder / "src.png")
    Image.fromarray(255 - good).save(folder / "ed.png")
    (folder / "trunc.png").write_bytes((folder / "ed.png").read_bytes()[:300])
    (folder / "magic.png").write_bytes(b"\x00\x00\x00\x00" + (folder / "ed.png").read_bytes()[4:])
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg")
    frames = [Image.fromarray(good), Image.fromarray(255 - good)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    ok = {"source": "src.png", "edited": "ed.png", "instruction": "invert the colors"}
    rows = [ok, {**ok, "edited": "trunc.png"}, {**ok, "edited": "magic.png"},
            {**ok, "edited": "cmyk.jpg", "instruction": "keep it, in CMYK"},
            {**ok, "edited": "anim.gif"}, {**ok, "edited": 42}, {**ok, "extra": 1}]
    s = ingest_path(workspace, write_manifest(folder, rows))
    assert (s.rows, s.ingested, s.quarantined) == (7, 2, 5)
    wh = Warehouse.open(workspace)
    reasons = [r[0] for r in wh.query("SELECT reason FROM quarantine ORDER BY row_number")]
    assert ["truncated" in reasons[0], "not a recognized" in reasons[1], "multi-frame" in reasons[2],
            "non-empty path string" in reasons[3], "unknown field" in reasons[4]] == [True] * 5
