"""`sfr propose` end to end on a real workspace."""
import json

from pipelines.cli import main


def test_propose_batch_then_all(regions_batch, capsys, monkeypatch):
    monkeypatch.delenv("SFR_SAM_CHECKPOINT", raising=False)
    monkeypatch.delenv("SFR_SAM_MODEL_TYPE", raising=False)
    home = str(regions_batch["ws"].home)
    assert main(["--home", home, "propose", "--batch", "b1", "--max-regions", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["proposer"], out["n_proposed"], out["n_groups"]) == ("classical", 2, 2)
    assert main(["--home", home, "propose", "--all", "--max-regions", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n_existing"], out["n_proposed"]) == (2, 0)


def test_propose_with_tiny_sam(regions_batch, tiny_sam_checkpoint, capsys):
    home = str(regions_batch["ws"].home)
    rc = main(["--home", home, "propose", "--batch", "b1", "--checkpoint", str(tiny_sam_checkpoint),
               "--model-type", "tiny", "--points-per-side", "2", "--device", "cpu"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["proposer"] == "sam:tiny"


def test_user_errors_are_one_line(regions_batch, tmp_path, capsys):
    home = str(regions_batch["ws"].home)
    assert main(["--home", home, "propose", "--batch", "nope"]) == 2
    assert "batch 'nope' is not in the warehouse" in capsys.readouterr().err
    missing = tmp_path / "sam_vit_b.pth"
    assert main(["--home", home, "propose", "--all", "--checkpoint", str(missing), "--model-type", "vit_b"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "vit_b" in err and "Traceback" not in err
