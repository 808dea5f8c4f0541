"""Near-duplicate sources: flips, quarter turns, centre crops, resizes and re-encodes of real
photos link (within SOURCE_HAMMING bits); different photos do not. The 'perceptual' split scheme
keeps them in one split, and the dataset check catches a test source that copies a train source."""
import io
import itertools

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from tests.fixtures.curation import png_bytes
from warehouse.curation import CurationConfig, build_dataset
from warehouse.curation.checks import check_no_near_duplicate_sources
from warehouse.curation.filters import dihedral_dhashes
from warehouse.curation.nearsource import SOURCE_HAMMING, source_distance
from warehouse.curation.splits import resolve_linking
from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore

# Photos that ship inside scikit-image (colour and grey; no download).
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel", "camera", "coins", "moon", "page", "text", "horse", "brick", "grass", "gravel", "cell",
          "clock", "logo"]


def _photo(name: str) -> Image.Image:
    a = np.asarray(getattr(skdata, name)())
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return Image.fromarray(a[..., :3].astype(np.uint8))


def _jpeg(im: Image.Image, quality: int = 60) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _crop(im: Image.Image, frac: float) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * frac), int(h * frac)
    return im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


COPIES = {
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "flip": lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rot180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rot270": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "crop90": lambda im: _crop(im, 0.9),
    "resize": lambda im: im.resize((im.size[0] // 3, im.size[1] // 3)),
    "jpeg": _jpeg,
    "all": lambda im: _jpeg(_crop(im.transpose(Image.Transpose.ROTATE_90), 0.9).resize((128, 128))),
}


@pytest.fixture(scope="module")
def hashed():
    return {n: dihedral_dhashes(_photo(n)) for n in PHOTOS}


def test_copies_of_a_photo_link(hashed):
    far = {}
    for name in PHOTOS:
        for kind, fn in COPIES.items():
            d = source_distance(hashed[name], dihedral_dhashes(fn(_photo(name))))
            if d > SOURCE_HAMMING:
                far[f"{name}/{kind}"] = d
    assert far == {}


def test_different_photos_do_not_link(hashed):
    dists = {(a, b): source_distance(hashed[a], hashed[b]) for a, b in itertools.combinations(PHOTOS, 2)}
    assert min(dists.values()) > SOURCE_HAMMING, sorted(dists.items(), key=lambda kv: kv[1])[:3]
    # Exact flips and quarter turns cost nothing: the variant that undoes them matches bit for bit.
    assert source_distance(hashed["chelsea"], dihedral_dhashes(COPIES["rot180"](_photo("chelsea")))) <= 2


def _groups_in(wh, dataset_id: str, split: str) -> list[tuple[str, str]]:
    return wh.query("SELECT DISTINCT group_id, source_sha256 FROM dataset_rows WHERE dataset_id = ? AND split = ? "
                    "ORDER BY group_id", [dataset_id, split])


def test_perceptual_scheme_links_a_mirrored_copy_and_the_check_catches_leaks(curation_ws, annotated_warehouse):
    ws, wh = curation_ws, Warehouse.open(curation_ws)
    base = dict(dedupe_hamming=-1, fractions=(0.5, 0.25, 0.25))
    v0 = build_dataset(ws, CurationConfig(**base, split_linking="sha256"))
    assert v0.config["split_linking"] == "sha256"
    # An existing workspace (sha256 assignments, no perceptual ones) keeps its scheme on 'auto'.
    with wh.read() as con:
        assert resolve_linking(con, CurationConfig(**base)).split_linking == "sha256"
    (ga, src_a), (gb, _) = _groups_in(wh, v0.dataset_id, "train")[0], _groups_in(wh, v0.dataset_id, "test")[0]
    # Group B's source becomes a mirrored copy of group A's (other bytes, other sha256).
    store = LocalImageStore(ws)
    mirrored = np.asarray(Image.open(io.BytesIO(store.get(src_a))).convert("RGB"))[:, ::-1]
    data = png_bytes(np.ascontiguousarray(mirrored))
    sha_b, uri = store.put(data, "PNG")
    with wh.write() as con:
        con.execute("INSERT INTO images (sha256, original_sha256, uri, width, height, format, original_mode, n_bytes) "
                    "VALUES (?, ?, ?, ?, ?, 'PNG', 'RGB', ?) ON CONFLICT DO NOTHING",
                    [sha_b, sha_b, uri, mirrored.shape[1], mirrored.shape[0], len(data)])
        con.execute("UPDATE samples SET source_sha256 = ? WHERE group_id = ?", [sha_b, gb])
    # The old scheme keeps its splits: B stays in test while its photo trains in A. The check fails.
    v1 = build_dataset(ws, CurationConfig(**base, split_linking="sha256"))
    ok, details = check_no_near_duplicate_sources(ws, v1.dataset_id)
    assert not ok and details["near_duplicates"][0]["test_source"] == sha_b
    assert details["near_duplicates"][0]["train_source"] == src_a and "perceptual" in details["fix"]
    # Opting in: a new scheme where A and B (linked through their sources) share a split.
    v2 = build_dataset(ws, CurationConfig(**base, split_linking="perceptual"))
    assert v2.dataset_id != v1.dataset_id and v2.config["split_linking"] == "perceptual"
    splits = dict(wh.query("SELECT DISTINCT group_id, split FROM dataset_rows WHERE dataset_id = ? "
                           "AND group_id IN (?, ?)", [v2.dataset_id, ga, gb]))
    assert len(splits) == 2 and splits[ga] == splits[gb]
    ok, details = check_no_near_duplicate_sources(ws, v2.dataset_id)
    assert ok and details["n_near_duplicates"] == 0 and details["n_test_sources"] > 0
    with wh.read() as con:     # once opted in, 'auto' follows the new scheme
        assert resolve_linking(con, CurationConfig(**base)).split_linking == "perceptual"


def test_unreadable_source_is_skipped_not_fatal(curation_ws, annotated_warehouse):
    from warehouse.curation.nearsource import ensure_source_hashes
    wh = Warehouse.open(curation_ws)
    shas = [r[0] for r in wh.query("SELECT DISTINCT source_sha256 FROM samples ORDER BY 1")]
    path = LocalImageStore(curation_ws).local_path(shas[0])
    path.write_bytes(b"not an image")               # truncated / corrupt bytes in the store
    assert ensure_source_hashes(curation_ws) == {"hashed": len(shas) - 1, "failed": 1}
    v = build_dataset(curation_ws, CurationConfig(dedupe_hamming=-1, fractions=(0.5, 0.25, 0.25)))
    assert v.n_rows == 24                             # the batch still builds; that source links by sha256 only
    ok, details = check_no_near_duplicate_sources(curation_ws, v.dataset_id)
    assert ok and details["hash_failures"] == 1
