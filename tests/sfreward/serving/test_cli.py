"""`sfr score` and `sfr serve`, with the model from a directory and from the registry."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main
from sfreward import registry
from tests.fixtures.serving import box_regions, edits_of, photo

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def sample_files(tmp_path):
    src = photo("astronaut", 64)
    [ed] = edits_of(src, 1)
    Image.fromarray(src).save(tmp_path / "src.png")
    Image.fromarray(ed).save(tmp_path / "ed.png")
    (tmp_path / "regions.json").write_text(json.dumps({"regions": box_regions(64, 64)}))
    return tmp_path


def test_sfr_score_prints_json(sample_files, tiny_model_dir, tiny_scorer, capsys):
    f = sample_files
    rc = main(["score", "--source", str(f / "src.png"), "--edited", str(f / "ed.png"),
               "--instruction", "recolour the box", "--regions", str(f / "regions.json"),
               "--model", str(tiny_model_dir), "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["valid"] and out["region_source"] == "supplied"
    assert [r["region_id"] for r in out["regions"]] == ["edit-box", "ctx-box", "background"]
    [direct] = tiny_scorer.score([f / "src.png"], [f / "ed.png"], "recolour the box", [box_regions(64, 64)])
    assert out["rewards"] == pytest.approx(direct.rewards, abs=1e-6)
    assert out["model_version"] == tiny_scorer.version

    rc = main(["score", "--source", str(f / "src.png"), "--edited", str(f / "ed.png"),
               "--instruction", "x", "--model", str(tiny_model_dir), "--device", "cpu"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["region_source"] in ("proposed", "whole_image")


def test_sfr_score_errors_are_one_line(sample_files, tiny_model_dir, capsys):
    f = sample_files
    base = ["score", "--edited", str(f / "ed.png"), "--instruction", "x", "--model", str(tiny_model_dir)]
    assert main(base + ["--source", str(f / "nope.png")]) == 2
    assert "--source: file" in capsys.readouterr().err
    (f / "bad.json").write_text("{oops")
    assert main(base + ["--source", str(f / "src.png"), "--regions", str(f / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["score", "--source", str(f / "src.png"), "--edited", str(f / "ed.png"), "--instruction",
                 "x", "--model", str(f / "no-such-model")]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    Image.fromarray(photo("astronaut", 32)).save(f / "small.png")
    assert main(base[:1] + ["--source", str(f / "src.png"), "--edited", str(f / "small.png"),
                            "--instruction", "x", "--model", str(tiny_model_dir)]) == 2
    assert "differs from the source" in capsys.readouterr().err


def test_load_from_registry_alias_verifies_weights(workspace, tiny_model_dir, sample_files, capsys):
    import sfreward

    model_id = registry.register_model(workspace, tiny_model_dir, dataset_id=None)
    registry.promote(workspace, model_id, "production", force=True)
    scorer = sfreward.load("production", home=workspace.home, device="cpu")
    assert scorer.version == model_id
    f = sample_files
    assert main(["--home", str(workspace.home), "score", "--source", str(f / "src.png"), "--edited",
                 str(f / "ed.png"), "--instruction", "x", "--model", "production"]) == 0
    assert json.loads(capsys.readouterr().out)["model_version"] == model_id
    weights = workspace.models / model_id / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(registry.ArtifactError, match="does not match"):
        sfreward.load("production", home=workspace.home, device="cpu")
    assert main(["--home", str(workspace.home), "score", "--source", str(f / "src.png"), "--edited",
                 str(f / "ed.png"), "--instruction", "x", "--model", "candidate-typo"]) == 2
    assert "no model or alias 'candidate-typo'" in capsys.readouterr().err


def test_sfr_serve_needs_a_private_token(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SFR_SERVER_TOKEN", raising=False)
    assert main(["serve", "--model", str(tiny_model_dir)]) == 2
    assert "no usable server token" in capsys.readouterr().err
    monkeypatch.setenv("SFR_SERVER_TOKEN", "short")
    assert main(["serve", "--model", str(tiny_model_dir)]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    tok = tmp_path / "token"
    tok.write_text("a-long-enough-secret-token\n")
    tok.chmod(0o644)
    assert main(["serve", "--model", str(tiny_model_dir), "--token-file", str(tok)]) == 2
    err = capsys.readouterr().err
    assert "readable by group/others" in err and "a-long-enough-secret-token" not in err
    inside = REPO / "tests" / "sfreward" / "serving" / "__init__.py"
    assert main(["serve", "--model", str(tiny_model_dir), "--token-file", str(inside)]) == 2
    assert "inside the repository" in capsys.readouterr().err


@pytest.mark.slow  # the subprocess imports every Dagster definition through `pipelines` (~1 min here)
def test_sfr_serve_subprocess(tiny_model_dir, tmp_path, server_token):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SFR_SERVER_TOKEN": server_token, "SFR_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port),
                             "--model", str(tiny_model_dir), "--device", "cpu", "--max-batch", "8"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        from sfreward.client import RewardClient

        src = photo("coffee", 64)
        out = RewardClient(url, token=server_token).score_group(src, edits_of(src, 2), "warmer")
        assert out["valid"] == [True, True] and np.isfinite(np.array(out["advantages"], float)).all()
    finally:
        proc.terminate()
        logs = proc.communicate(timeout=30)[0]
    assert server_token not in logs
