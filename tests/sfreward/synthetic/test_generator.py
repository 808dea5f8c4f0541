"""The synthetic generator's ground truth agrees with its images, and the output is deterministic."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from sfreward.synthetic import SynthConfig, generate, read_ground_truth
from sfreward.synthetic.scene import make_scene
from warehouse import masks

CFG = SynthConfig(n_sources=4, rollouts=4, image_size=96, seed=3)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    manifest = generate(out, CFG)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return out, rows, read_ground_truth(out / "ground_truth.jsonl")


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_manifest_rows_and_groups(batch):
    out, rows, truth = batch
    assert len(rows) == CFG.n_sources * CFG.rollouts
    assert {r["sample_id"] for r in rows} == set(truth)
    for r in rows:
        assert set(r) == {"sample_id", "group_id", "source", "edited", "instruction", "editor", "category", "metadata"}
        assert (out / r["source"]).is_file() and (out / r["edited"]).is_file()
        assert r["category"] in {"color_alter", "tone_transfer"}
        assert r["metadata"]["synthetic"] is True
        assert "regions" not in r["metadata"]  # ground truth stays out of the manifest
    groups = {}
    for r in rows:
        groups.setdefault(r["group_id"], []).append(r)
    assert len(groups) == CFG.n_sources
    for g in groups.values():
        assert len({r["source"] for r in g}) == 1 and len({r["instruction"] for r in g}) == 1
        # Rollouts of a group really differ (different mixes), and the mix is recorded.
        assert len({hashlib.sha256((out / r["edited"]).read_bytes()).hexdigest() for r in g}) == len(g)
        verdicts = [tuple(reg["verdict"] for reg in truth[r["sample_id"]]["regions"]) for r in g]
        assert len(set(verdicts)) > 1


def test_ground_truth_is_consistent_with_pixels(batch):
    out, rows, truth = batch
    n_damaged = n_untouched = 0
    for r in rows:
        src, ed = _img(out / r["source"]), _img(out / r["edited"])
        gt = truth[r["sample_id"]]
        regions = gt["regions"]
        union = np.zeros(src.shape[:2], bool)
        kinds = [reg["kind"] for reg in regions]
        assert kinds.count("edit") == 1 and kinds[-1] == "background" and kinds.count("background") == 1
        for reg in regions:
            m = masks.decode(reg["mask"])
            assert m.shape == src.shape[:2] and m.sum() == reg["area"] > 0
            assert not (union & m).any(), "regions overlap"
            union |= m
            diff = np.abs(src[m] - ed[m]).mean()
            touched = bool(reg["changes"]) and not (reg["kind"] == "edit" and reg["changes"][0]["strength"] == 0
                                                    and len(reg["changes"]) == 1)
            if touched:
                assert diff > 2.0, (r["sample_id"], reg["index"], reg["changes"], diff)  # > 2/255 mean
                n_damaged += reg["verdict"] in ("artifact", "unintended_change")
            else:
                assert np.array_equal(src[m], ed[m]), (r["sample_id"], reg["index"])
                n_untouched += 1
            if reg["verdict"] == "fine":
                assert reg["preserve"] == 25.0 and not reg["changes"]
            if reg["verdict"] in ("artifact", "unintended_change"):
                assert reg["preserve"] < 25.0
            if reg["kind"] == "edit":
                assert reg["success"] is not None
            elif reg["kind"] == "context":
                assert reg["success"] == reg["preserve"]
            else:
                assert reg["success"] is None
        assert union.all(), "regions must cover the image (background is the complement)"
        assert 0 <= gt["overall"] <= 25 and 0 <= gt["artifacts"] <= 25 and 0 <= gt["naturalness"] <= 25
        has_art = any(reg["verdict"] == "artifact" for reg in regions)
        assert (gt["artifacts"] < 25) == has_art
    assert n_damaged >= 3 and n_untouched >= 3


def test_each_group_has_one_clean_correct_rollout(batch):
    out, rows, truth = batch
    clean = {}
    for r in rows:
        regs = truth[r["sample_id"]]["regions"]
        ok = all(reg["verdict"] in ("correct_edit", "fine") for reg in regs) and \
            [reg["verdict"] for reg in regs].count("correct_edit") == 1
        clean.setdefault(r["group_id"], []).append((r["metadata"]["rollout"], ok))
    assert all(any(ok for _, ok in g) for g in clean.values())
    # The clean one is not always in the same position.
    assert len({next(i for i, ok in g if ok) for g in clean.values()}) > 1


def test_deterministic(batch, tmp_path):
    out, rows, truth = batch
    manifest = generate(tmp_path, CFG)
    assert manifest.read_text() == (out / "manifest.jsonl").read_text()
    assert (tmp_path / "ground_truth.jsonl").read_text() == (out / "ground_truth.jsonl").read_text()
    for r in rows[:4]:
        assert (tmp_path / r["edited"]).read_bytes() == (out / r["edited"]).read_bytes()


def test_user_folder_and_bad_inputs(tmp_path):
    from skimage import data
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg")
    (folder / "broken.png").write_bytes(b"not an image")
    manifest = generate(tmp_path / "out", SynthConfig(n_sources=1, rollouts=2, image_size=64, source_dir=str(folder)))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 2 and "coffee" in rows[0]["source"]
    with pytest.raises(ValueError, match="rollouts"):
        SynthConfig(rollouts=0).validate()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generate(tmp_path / "x", SynthConfig(source_dir=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="n_regions"):
        SynthConfig(n_regions=1).validate()
    # A featureless photo still gets separated geometric regions (SLIC superpixels).
    flat = make_scene("flat", np.full((64, 64, 3), 128, np.uint8), 64, 3)
    assert flat.n_regions >= 3 and flat.masks.sum(0).max() == 1


def test_cli_synth(tmp_path, capsys):
    from pipelines.cli import main
    home = tmp_path / "home"
    assert main(["--home", str(home), "synth", "--n-sources", "2", "--rollouts", "2", "--size", "48"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_samples"] == 4 and out["n_groups"] == 2
    assert out["manifest"].startswith(str(home / "batches"))
    assert main(["--home", str(home), "synth", "--rollouts", "0"]) == 2
    assert "rollouts" in capsys.readouterr().err


def test_procedural_sources_are_distinct_and_never_near_duplicates():
    """Sources beyond the photos: procedural scenes (extra='procedural') are new images, not
    copies, so the perceptual split linking keeps each its own component."""
    import itertools

    from PIL import Image

    from sfreward.synthetic import SynthConfig, build_scenes
    from warehouse.curation.filters import dihedral_dhashes
    from warehouse.curation.nearsource import SOURCE_HAMMING, source_distance

    scenes = build_scenes(SynthConfig(n_sources=12, image_size=64, extra="procedural"))
    assert len(scenes) == 12 and sum("procedural" in s.name for s in scenes) >= 4
    hashes = [dihedral_dhashes(Image.fromarray((s.image * 255).round().astype("uint8"))) for s in scenes]
    close = [(scenes[a].name, scenes[b].name) for a, b in itertools.combinations(range(len(scenes)), 2)
             if source_distance(hashes[a], hashes[b]) <= SOURCE_HAMMING]
    assert close == []
    # The default still mirrors photos: those copies ARE near-duplicates of their originals.
    mirrored = build_scenes(SynthConfig(n_sources=9, image_size=64))
    h = [dihedral_dhashes(Image.fromarray((s.image * 255).round().astype("uint8"))) for s in (mirrored[0], mirrored[8])]
    assert mirrored[8].name.endswith("-v1") and source_distance(*h) <= SOURCE_HAMMING
