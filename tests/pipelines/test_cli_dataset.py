"""`sfr dataset build|list|show|export` against a real workspace."""
import json

from pipelines.cli import main


def _run(capsys, *argv) -> tuple[int, dict | list | None, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    try:
        return rc, json.loads(out.out), out.err
    except json.JSONDecodeError:
        return rc, None, out.err


def test_build_list_show_export(curation_ws, annotated_warehouse, capsys, tmp_path, hf_cache):
    home = str(curation_ws.home)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"fractions": [0.5, 0.25, 0.25], "dedupe_hamming": -1}))
    rc, built, _ = _run(capsys, "--home", home, "dataset", "build", "--config", str(cfg), "--set", "license=CC0-1.0")
    assert rc == 0 and built["n_rows"] == 24 and built["config"]["license"] == "CC0-1.0"
    rc, again, _ = _run(capsys, "--home", home, "dataset", "build", "--config", str(cfg), "--set", "license=CC0-1.0")
    assert again["dataset_id"] == built["dataset_id"]
    rc, listed, _ = _run(capsys, "--home", home, "dataset", "list")
    assert [v["dataset_id"] for v in listed] == [built["dataset_id"]]
    rc, shown, _ = _run(capsys, "--home", home, "dataset", "show", built["dataset_id"][:8])
    assert rc == 0 and all(c["passed"] for c in shown["checks"].values())
    rc, exported, _ = _run(capsys, "--home", home, "dataset", "export", "latest", "--format", "reward_json")
    assert rc == 0 and exported["exports"]["reward_json"].endswith(f"{built['dataset_id']}/reward_json")


def test_user_errors(curation_ws, capsys, tmp_path):
    home = str(curation_ws.home)
    rc, _, err = _run(capsys, "--home", home, "dataset", "show", "latest")
    assert rc == 2 and "no dataset versions yet" in err
    rc, _, err = _run(capsys, "--home", home, "dataset", "build", "--set", "score_stat=mode")
    assert rc == 2 and "score_stat" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    rc, _, err = _run(capsys, "--home", home, "dataset", "build", "--config", str(bad))
    assert rc == 2 and "bad.json is not valid JSON" in err


def test_build_default_ratings_flag(curation_ws, annotated_warehouse, capsys):
    home = str(curation_ws.home)
    base = ("--home", home, "dataset", "build", "--set", "dedupe_hamming=-1", "--set", "fractions=[0.5,0.25,0.25]")
    rc, counted, _ = _run(capsys, *base)
    assert rc == 0 and "default_ratings" not in counted["config"]       # the default keeps the old hash
    rc, ignored, _ = _run(capsys, *base, "--default-ratings", "ignore")
    assert rc == 0 and ignored["config"]["default_ratings"] == "ignore"
    assert ignored["dataset_id"] != counted["dataset_id"]
    rc, _, err = _run(capsys, *base, "--default-ratings", "drop")
    assert rc == 2 and "default_ratings must be one of" in err and "'drop'" in err
