"""sfreward.load / Scorer.score: input types, chunking, resizing, valid flags, region rewards."""
from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sfreward.client import encode_image
from sfreward.inference import InvalidInput, Scorer, ScorerConfig, decode_image, normalize_regions, resize_masks
from tests.fixtures.serving import box_regions, edits_of, photo, png

REPO = Path(__file__).resolve().parents[3]


def test_import_sfreward_stays_light():
    code = "import sys, sfreward; assert 'torch' not in sys.modules; print(callable(sfreward.load))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_load_by_path_versions_the_weights(tiny_model_dir, tiny_scorer):
    name, digest = tiny_scorer.version.split("@")
    assert name == tiny_model_dir.name and len(digest) == 12
    assert tiny_scorer.image_size == (64, 64)


def test_region_rewards_follow_the_formula(tiny_scorer):
    src = photo("astronaut", 96)
    [res] = tiny_scorer.score([src], edits_of(src, 1), "make the box red", [box_regions(96, 96)])
    assert res.valid and res.error is None
    assert [r.kind for r in res.regions] == ["edit", "context", "background"]
    aes = min(res.naturalness, res.artifacts)
    assert res.aes == pytest.approx(aes)
    for r in res.regions:
        phi = r.preserve if r.kind == "background" else min(r.success, r.preserve)
        assert r.phi == pytest.approx(phi)
        assert r.reward == pytest.approx(math.sqrt(phi * aes) / 25)
        assert 0 <= r.reward <= 1
    assert res.background is res.regions[-1]
    # the background is the complement of the other two boxes
    assert res.background.area == 96 * 96 - res.regions[0].area - res.regions[1].area
    d = res.to_dict()
    assert d["rewards"] == res.rewards and d["background"]["kind"] == "background"


def test_bad_items_are_invalid_and_the_rest_is_scored(tiny_scorer):
    src = photo("chelsea", 64)
    good = edits_of(src, 2)
    wrong_mask = [{"kind": "edit", "mask": np.ones((10, 10), bool)}]
    items = [
        (src, good[0], "recolour", None),
        (src, b"\x89PNG broken", "recolour", None),
        (src, photo("chelsea", 32), "recolour", None),
        (src, good[1], "   ", None),
        (src, good[1], "recolour", wrong_mask),
        (np.zeros((64, 64), np.float32), good[1], "recolour", None),
        (src, good[1], "recolour", [{"kind": "sky", "bbox": [0, 0, 5, 5]}]),
        (src, good[1], "recolour", None),
    ]
    res = tiny_scorer.score(*[list(x) for x in zip(*items)])
    assert [r.valid for r in res] == [True, False, False, False, False, False, False, True]
    assert "edits[1]: cannot decode image bytes" in res[1].error
    assert "edits[2]: size 32x32 differs from the source's 64x64" in res[2].error
    assert "item 3: instruction" in res[3].error
    assert "item 4: region 0: mask is (10, 10)" in res[4].error
    assert "sources[5]: array must be uint8" in res[5].error
    assert "item 6: region 0: kind must be one of" in res[6].error
    assert all(r.regions == [] and r.model_version == tiny_scorer.version for r in res if not r.valid)
    # invalid neighbours change nothing for the valid items
    alone = tiny_scorer.score([src, src], [good[0], good[1]], "recolour")
    assert res[0].rewards == pytest.approx(alone[0].rewards, abs=1e-5)
    assert res[7].rewards == pytest.approx(alone[1].rewards, abs=1e-5)


def test_any_batch_size_in_chunks_gives_the_same_scores(tiny_scorer):
    src = photo("coffee", 64)
    edits = edits_of(src, 11, seed=1)
    calls = []

    class Counting:
        config = tiny_scorer.model.config

        def predict(self, s, e, instr, masks):
            calls.append(s.shape[0])
            return tiny_scorer.model.predict(s, e, instr, masks)

    small = Scorer(Counting(), "v", "cpu", config=ScorerConfig(batch_size=4))
    a = small.score([src] * 11, edits, "brighten")
    assert calls == [4, 4, 3]
    b = tiny_scorer.score([src] * 11, edits, "brighten")
    for x, y in zip(a, b):
        assert x.rewards == pytest.approx(y.rewards, abs=1e-5)
        assert x.overall == pytest.approx(y.overall, abs=1e-4)
    assert tiny_scorer.score([], [], []) == []


def test_input_types_and_sizes_agree(tiny_scorer, tmp_path):
    src = photo("rocket", 128)
    [ed] = edits_of(src, 1, seed=2)
    f = tmp_path / "edit.png"
    Image.fromarray(ed).save(f)
    tensor = torch.from_numpy(ed).permute(2, 0, 1).float() / 255
    forms = [ed, png(ed), Image.fromarray(ed), str(f), tensor, encode_image(tensor, "npy")]
    res = tiny_scorer.score([src] * len(forms), forms, "recolour the box")
    assert all(r.valid for r in res), [r.error for r in res]
    for r in res[1:]:
        assert r.rewards == pytest.approx(res[0].rewards, abs=1e-4)
    # RGBA and grayscale inputs are converted, not refused
    rgba = np.dstack([ed, np.full(ed.shape[:2], 255, np.uint8)])
    gray = np.asarray(Image.fromarray(ed).convert("L"))
    res2 = tiny_scorer.score([src, np.asarray(Image.fromarray(src).convert("L"))], [rgba, gray], "x")
    assert all(r.valid for r in res2)


def test_small_region_survives_downsampling_and_background_is_added():
    m = np.zeros((512, 512), bool)
    m[10:14, 10:14] = True                      # 4x4 px: under half of any 8x8 model pixel
    big = np.zeros((512, 512), bool)
    big[:, 256:] = True
    out = resize_masks(np.stack([m, big]), (64, 64))
    assert out.shape == (2, 64, 64)
    assert out[0].sum() >= 1 and out[0][:3, :3].any()
    assert out[1][:, 32:].all() and not out[1][:, :32].any()
    regs = normalize_regions([{"kind": "edit", "mask": big}], 512, 512)
    assert [r.kind for r in regs] == ["edit", "background"]
    assert (regs[1].mask == ~big).all()
    # regions covering everything: no empty background added
    full = normalize_regions([{"kind": "edit", "mask": np.ones((8, 8), bool)}], 8, 8)
    assert [r.kind for r in full] == ["edit"]
    assert [r.kind for r in normalize_regions(None, 8, 8)] == ["background"]


def test_npy_uploads_are_checked_before_allocation():
    img = photo("coffee", 32)
    assert (decode_image(encode_image(img, "npy")) == img).all()
    good = encode_image(img, "npy")
    header_end = good.index(b"\n") + 1
    # a forged header claiming a huge image: refused by the pixel limit, nothing allocated
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "|u1", "fortran_order": False, "shape": (99999, 9999, 3)})
    with pytest.raises(InvalidInput, match="exceeds the limit"):
        decode_image(hdr.getvalue() + good[header_end:], "edits[0]", max_pixels=1_000_000)
    with pytest.raises(InvalidInput, match="needs 3072"):
        decode_image(good[:-5], "edits[0]")
    buf = io.BytesIO()
    np.save(buf, img.astype(np.float32))
    with pytest.raises(InvalidInput, match="must be uint8"):
        decode_image(buf.getvalue(), "edits[0]")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match="edits\\[0\\]"):
        decode_image(buf.getvalue(), "edits[0]")


def test_non_finite_or_misordered_model_outputs_spoil_only_their_items(tiny_scorer):
    src = photo("coffee", 64)
    edits = edits_of(src, 4, seed=2)

    class Spoiling:  # the real model, with chosen outputs broken
        config = tiny_scorer.model.config
        spoil = staticmethod(lambda out: None)

        def predict(self, *args):
            out = {k: v.clone() for k, v in tiny_scorer.model.predict(*args).items()}
            self.spoil(out)
            return out

    model = Spoiling()
    scorer = Scorer(model, "v", "cpu", config=ScorerConfig(batch_size=4))
    clean = scorer.score([src] * 4, edits, "brighten", [box_regions(64, 64)] * 4)
    k = len(clean[0].regions)
    model.spoil = lambda out: (out["preserve"].__setitem__(k + 1, float("nan")),   # a region of item 1
                               out["artifacts"].__setitem__(3, float("inf")))      # item 3
    res = scorer.score([src] * 4, edits, "brighten", [box_regions(64, 64)] * 4)
    assert [r.valid for r in res] == [True, False, True, False]
    assert res[1].error == "item 1: model produced non-finite scores for this item"
    assert res[0].to_dict() == clean[0].to_dict() and res[2].to_dict() == clean[2].to_dict()
    # outputs that do not line up with the regions: the batch fails, then each item alone
    model.spoil = lambda out: out["region_image"].add_(1)
    res = scorer.score([src] * 2, edits[:2], "brighten", [box_regions(64, 64)] * 2)
    assert [r.error for r in res] == [f"item {i}: model failed on this item (RuntimeError: model output regions "
                                      "are not in input order (region_image mismatch))" for i in range(2)]

    def extra_row(out):
        for c in ("success", "preserve", "success_std", "preserve_std", "region_image"):
            out[c] = torch.cat([out[c], out[c][-1:]])
    model.spoil = extra_row
    res = scorer.score([src], edits[:1], "brighten", [box_regions(64, 64)])
    assert res[0].error == (f"item 0: model failed on this item (RuntimeError: model returned {k + 1} region rows "
                            f"for {k} regions)")


def test_score_to_dict_is_asdict_plus_derived_fields(tiny_scorer):
    from dataclasses import asdict

    src = photo("coffee", 64)
    res = tiny_scorer.score([src], edits_of(src, 1), "brighten", [box_regions(64, 64)])[0]
    d = res.to_dict()
    assert list(d) == list(asdict(res)) + ["rewards", "background", "uncertainty"]
    assert {k: d[k] for k in asdict(res)} == asdict(res)
    assert d["background"] == asdict(res.background) and d["uncertainty"] == res.uncertainty
    d["regions"][0]["bbox"].append(99)  # a copy, as asdict makes
    assert len(res.regions[0].bbox) == 4


@pytest.mark.parametrize("size", [(64, 64), (37, 91), (300, 500)])
def test_model_tensor_resize_matches_pil_bilinear(size):
    """Downscaling, a non-square size and upscaling of a real photo: PIL's bilinear values, at
    most one level (1/255) apart in a few pixels."""
    from PIL import Image
    from skimage import data

    from sfreward.inputs import to_model_tensor
    arr = data.chelsea()
    ref = np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.BILINEAR)).astype(int)
    got = to_model_tensor(arr, size)
    assert got.shape == (3, *size) and got.dtype == torch.float32
    got = (got * 255).round().permute(1, 2, 0).numpy().astype(int)
    diff = np.abs(ref - got)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005
