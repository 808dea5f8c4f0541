"""`sfr train`, `sfr evaluate`, `sfr models list|show|promote` end to end (in-process)."""
from __future__ import annotations

import json

import pytest

from pipelines.cli import main

FAST = ["--set", "max_steps=4", "--set", "batch_size=6", "--set", "num_threads=1",
        "--set", "eval_split=", "--set", "warmup_steps=1"]


def _run(capsys, *argv) -> tuple[int, dict | list | None, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    try:
        return rc, json.loads(out), err
    except json.JSONDecodeError:
        return rc, None, err


def test_train_evaluate_list_show_promote(sfreward_workspace, capsys):
    home = str(sfreward_workspace.home)
    rc, out, err = _run(capsys, "--home", home, "train", "--dataset", "ds-test", *FAST)
    assert rc == 0, err
    mid = out["model_id"]
    assert out["aliases"] == ["candidate"] and out["evaluations"][0]["split"] == "test"
    assert out["evaluations"][0]["metrics"]["n_samples"] == 24
    rc, out, _ = _run(capsys, "--home", home, "models", "list")
    assert rc == 0 and [m["model_id"] for m in out] == [mid] and out[0]["aliases"] == "candidate"
    rc, out, _ = _run(capsys, "--home", home, "models", "show", "candidate")
    assert out["model_id"] == mid and out["dataset_id"] == "ds-test" and out["train_config"]["max_steps"] == 4
    rc, out, _ = _run(capsys, "--home", home, "evaluate", mid, "--dataset", "ds-test", "--split", "validation")
    assert rc == 0 and out["metrics"]["n_samples"] == 18
    rc, out, _ = _run(capsys, "--home", home, "models", "promote")
    assert rc == 0 and out["promoted"] == mid and out["alias"] == "production"
    rc, out, _ = _run(capsys, "--home", home, "models", "show", "production")
    assert sorted(out["aliases"]) == ["candidate", "production"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "nope"], "dataset 'nope' has no export"),
    (["train", "--dataset", "ds-test", "--set", "lr=fast"], "lr: expected a number"),
    (["models", "show", "production"], "no model or alias 'production'"),
    (["models", "promote", "sfr-missing"], "no model or alias 'sfr-missing'"),
])
def test_user_errors_are_one_line(sfreward_workspace, capsys, argv, message):
    rc, _, err = _run(capsys, "--home", str(sfreward_workspace.home), *argv)
    assert rc == 2 and message in err and "Traceback" not in err
