"""A pretrained checkpoint folder, end to end: `sfr train` (3 steps) -> registry (lineage) ->
`sfreward.load` -> the reward server (the app `sfr serve` runs) -> the same scores in process
and over HTTP. One case per backbone family and checkpoint size, vision-only and
vision-language folders both covered."""
from __future__ import annotations

import json
import shutil

import pytest

from pipelines.cli import main
from sfreward import registry
from sfreward.model import sha256_file
from tests.fixtures.serving import box_regions, edits_of, photo
from tests.sfreward.model.checkpoints import make_checkpoint

FAST = ["--set", "max_steps=3", "--set", "batch_size=6", "--set", "num_threads=1", "--set", "eval_split=",
        "--set", "warmup_steps=1", "--no-eval"]


def _train(capsys, home, *argv) -> tuple[int, dict | None, str]:
    rc = main(["--home", str(home), "train", "--dataset", "ds-test", *argv])
    out, err = capsys.readouterr()
    try:
        return rc, json.loads(out), err
    except json.JSONDecodeError:
        return rc, None, err


@pytest.mark.parametrize("family, size, full, preset", [
    ("siglip", 224, False, ""),          # the documented path: --set model.backbone_path only
    pytest.param("siglip", 384, True, "base", marks=pytest.mark.slow),
    ("clip", 224, True, "base"),
    pytest.param("clip", 384, False, "base", marks=pytest.mark.slow),
    ("dinov2", 224, False, "base"),
    pytest.param("dinov2", 384, False, "", marks=pytest.mark.slow),
])
def test_checkpoint_trains_registers_loads_and_serves(sfreward_workspace, server_token, capsys, tmp_path,
                                                      family, size, full, preset):
    import sfreward
    from sfreward.client import RewardClient
    from sfreward.server.app import BackgroundServer, ServerConfig, create_app

    ck = make_checkpoint(tmp_path / f"{family}-{size}", family, size, 32, full=full)
    sha = sha256_file(ck / "model.safetensors")
    home = sfreward_workspace.home
    argv = (["--preset", preset] if preset else []) + ["--set", f"model.backbone_path={ck}", *FAST]
    rc, out, err = _train(capsys, home, *argv)
    assert rc == 0, err
    rec = registry.get_model(sfreward_workspace, out["model_id"])
    mc = rec["model_config"]
    assert mc["backbone"] == family and mc["image_size"] == size and mc["backbone_path"] is None
    assert mc["backbone_source"]["path"] == str(ck.resolve())
    assert mc["backbone_source"]["weights_sha256"] == {"model.safetensors": sha}
    assert mc["text_encoder"] == ("transformer" if full else "hash")
    assert rec["train_config"]["preset"] == preset and rec["train_config"]["max_steps"] == 3
    card = json.loads((sfreward_workspace.models / out["model_id"] / "model_card.json").read_text())
    assert card["preset"] == (preset or None) and card["backbone_source"]["weights_sha256"]["model.safetensors"] == sha
    shutil.rmtree(ck)  # the registered model is self-contained

    scorer = sfreward.load(out["model_id"], home=home, device="cpu")
    assert scorer.image_size == (size, size)
    src = photo("coffee", 96)
    eds = edits_of(src, 3)
    regions = box_regions(96, 96)
    instruction = "make the cup red"
    local = scorer.score([src] * 3, eds, instruction, [regions] * 3)
    cfg = ServerConfig(token=server_token)
    with BackgroundServer(create_app(scorer, cfg)) as srv, RewardClient(srv.url, token=server_token) as client:
        served = client.score_group(src, eds, instruction, regions=regions)
    assert served["valid"] == [True] * 3 and served["model_version"] == out["model_id"]
    for item, row in zip(local, served["rewards"]):
        assert row == pytest.approx(item.rewards, abs=1e-5)


@pytest.mark.parametrize("case, message", [
    ("no_weights", "no weights file"),
    ("no_tokenizer", "no tokenizer"),
])
def test_bad_checkpoint_registers_nothing(sfreward_workspace, capsys, tmp_path, case, message):
    ck = make_checkpoint(tmp_path / "ck", "clip", 64, 16, full=True, tokenizer=case != "no_tokenizer")
    if case == "no_weights":
        (ck / "model.safetensors").unlink()
    rc, _, err = _train(capsys, sfreward_workspace.home, "--set", f"model.backbone_path={ck}", *FAST)
    assert rc == 2 and message in err and str(ck) in err and "Traceback" not in err
    assert registry.list_models(sfreward_workspace) == []
