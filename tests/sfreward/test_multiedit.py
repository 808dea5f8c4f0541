"""MultiEditBench: multi-region instructions, and a scorer that measures per-region success and
preservation of any editor's outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr


from sfreward.multiedit import MultiEditConfig, build, load_bench, region_scores, score
from sfreward.synthetic import SynthConfig, generate, ops, read_ground_truth
from warehouse import masks


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    build(root, MultiEditConfig(n_items=3, n_targets=2, image_size=64, seed=1))
    return load_bench(root)


def _src(root, item) -> np.ndarray:
    return np.asarray(Image.open(root / item["source"]).convert("RGB"), np.float32) / 255


def test_items_ask_for_several_regions(bench):
    root, items = bench
    assert len(items) == 3
    for it in items:
        targets = [r for r in it["regions"] if r["kind"] == "edit"]
        assert len(targets) == 2 == len(it["edits"])
        assert sum(r["kind"] == "background" for r in it["regions"]) == 1
        for e in it["edits"]:
            name = it["regions"][e["region"]]["name"]
            assert name in it["instruction"], (name, it["instruction"])
        assert " and " in it["instruction"]


def test_reference_and_identity_bound_the_scale(bench):
    root, items = bench
    ref = score(root, root / "reference")["summary"]
    assert ref["target_success"] == 25.0 and ref["other_preserve"] == 25.0 and ref["all_targets_done"] == 1.0
    ident = score(root, {it["item_id"]: _src(root, it) for it in items})["summary"]
    assert ident["target_success"] == 0.0 and ident["other_preserve"] == 25.0 and ident["all_targets_done"] == 0.0


def test_per_region_scores_follow_what_the_editor_did(bench):
    root, items = bench
    outputs = {}
    rng = np.random.default_rng(0)
    for it in items:
        img = _src(root, it)
        first = it["edits"][0]
        img = ops.apply_edit(img, masks.decode(it["regions"][first["region"]]["mask"]), first, 1.0)
        other = next(r for r in it["regions"] if r["kind"] == "context" or r["kind"] == "background")
        img = ops.apply_artifact(img, masks.decode(other["mask"]), "noise", 1.0, rng)
        outputs[it["item_id"]] = (img * 255).round().astype(np.uint8)
    res = score(root, outputs)
    for it, r in zip(items, res["items"]):
        regs = {g["index"]: g for g in r["regions"]}
        first, second = it["edits"][0]["region"], it["edits"][1]["region"]
        assert regs[first]["success"] > 22 and regs[second]["success"] < 3
        damaged = next(g for g in it["regions"] if g["kind"] in ("context", "background"))["index"]
        assert regs[damaged]["preserve"] < 15
        for g in r["regions"]:
            if g["kind"] != "edit" and g["index"] != damaged:
                assert g["preserve"] == 25.0
    assert res["summary"]["all_targets_done"] == 0.0


def test_missing_and_resized_outputs_do_not_stop_scoring(bench, tmp_path):
    root, items = bench
    out = tmp_path / "outs"
    out.mkdir()
    ref = np.asarray(Image.open(root / items[0]["reference"]))
    Image.fromarray(ref).resize((128, 128), Image.BILINEAR).save(out / f"{items[0]['item_id']}.png")
    (out / f"{items[1]['item_id']}.png").write_bytes(b"garbage")
    res = score(root, out)
    s = res["summary"]
    assert s["n_scored"] == 1 and s["n_missing"] == 2 and s["resized"] == 1
    assert s["target_success"] > 20
    status = {r["item_id"]: r["status"] for r in res["items"]}
    assert status[items[2]["item_id"]].startswith("error: no output file")
    with pytest.raises(FileNotFoundError, match="no MultiEditBench"):
        score(tmp_path / "nothing", out)
    with pytest.raises(ValueError, match="n_targets"):
        build(tmp_path / "b", MultiEditConfig(n_targets=1))


def test_scorer_agrees_with_generator_ground_truth(tmp_path):
    """On synthetic rollouts with known truth, the scorer ranks regions as the truth does."""
    manifest = generate(tmp_path, SynthConfig(n_sources=4, rollouts=4, image_size=64, seed=5))
    truth = read_ground_truth(tmp_path / "ground_truth.jsonl")
    s_true, s_est, p_true, p_est = [], [], [], []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        src = np.asarray(Image.open(tmp_path / row["source"]), np.float32) / 255
        out = np.asarray(Image.open(tmp_path / row["edited"]), np.float32) / 255
        gt = truth[row["sample_id"]]
        for reg in gt["regions"]:
            m = masks.decode(reg["mask"])
            if reg["kind"] == "edit":
                ideal = ops.apply_edit(src, m, gt["edit"], 1.0)
                s_true.append(reg["success"])
                s_est.append(region_scores(src, out, ideal, m, True)["success"])
            else:
                p_true.append(reg["preserve"])
                p_est.append(region_scores(src, out, src, m, False)["preserve"])
    assert spearmanr(s_true, s_est).statistic > 0.7
    assert spearmanr(p_true, p_est).statistic > 0.6


def test_cli_build_and_score(tmp_path, capsys):
    from pipelines.cli import main
    assert main(["--home", str(tmp_path / "home"), "multiedit", "build", "--n-items", "2", "--size", "48"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["n_items"] == 2
    assert main(["--home", str(tmp_path / "home"), "multiedit", "score", built["reference_outputs"],
                 "--report", str(tmp_path / "r.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["target_success"] == 25.0 and not out["errors"]
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["n_scored"] == 2
    assert main(["--home", str(tmp_path / "home"), "multiedit", "score", str(tmp_path / "none")]) == 2
