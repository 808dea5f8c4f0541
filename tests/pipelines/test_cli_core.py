"""`sfr ingest` and `sfr status` as a user runs them (subprocesses), and a damaged warehouse (in-process)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.core import make_samples


def sfr(*args, home, check=True):
    env = {**os.environ, "SFR_HOME": str(home)}
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_ingest_then_status(tmp_path):
    manifest = make_samples(tmp_path / "in", names=("astronaut",), rollouts=3)
    out = json.loads(sfr("ingest", str(manifest), home=tmp_path / "h").stdout)
    assert (out["ingested"], out["duplicates"], out["quarantined"]) == (3, 0, 0)
    assert out["batch_id"].startswith("b-")
    again = json.loads(sfr("ingest", str(manifest), home=tmp_path / "h").stdout)
    assert (again["ingested"], again["duplicates"]) == (0, 3)
    status = json.loads(sfr("status", home=tmp_path / "h").stdout)
    assert status["tables"]["samples"] == 3 and status["tables"]["groups"] == 1


def test_home_flag_overrides_env(tmp_path):
    manifest = make_samples(tmp_path / "in", names=("coffee",), rollouts=1)
    sfr("--home", str(tmp_path / "flag"), "ingest", str(manifest), home=tmp_path / "env")
    assert (tmp_path / "flag" / "warehouse.duckdb").exists()
    assert not (tmp_path / "env" / "warehouse.duckdb").exists()


def test_missing_manifest_is_one_clear_line(tmp_path):
    p = sfr("ingest", str(tmp_path / "nope.jsonl"), home=tmp_path / "h", check=False)
    assert p.returncode == 2
    assert "nope.jsonl: no such file" in p.stderr and "Traceback" not in p.stderr


def test_two_processes_ingesting_at_once_lose_nothing(tmp_path):
    m1 = make_samples(tmp_path / "a", names=("astronaut", "chelsea"), rollouts=3)
    m2 = make_samples(tmp_path / "b", names=("coffee", "rocket"), rollouts=3)
    env = {**os.environ, "SFR_HOME": str(tmp_path / "h")}
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ingest", str(m)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in (m1, m2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert sum(json.loads(o)["ingested"] for o, _ in outs) == 12
    status = json.loads(sfr("status", home=tmp_path / "h").stdout)
    assert status["tables"]["samples"] == 12 and status["tables"]["images"] == 16


def test_snapshot_then_status_of_the_snapshot(tmp_path):
    manifest = make_samples(tmp_path / "in", names=("astronaut", "coffee"), rollouts=2)
    sfr("ingest", str(manifest), home=tmp_path / "h")
    missing = sfr("status", "--snapshot", str(tmp_path / "lake"), home=tmp_path / "h", check=False)
    assert missing.returncode == 2 and "no snapshot yet" in missing.stderr and "Traceback" not in missing.stderr
    snap = json.loads(sfr("snapshot", str(tmp_path / "lake"), "--id", "first", home=tmp_path / "h").stdout)
    assert snap["snapshot_id"] == "first" and snap["rows"]["samples"] == 4
    status = json.loads(sfr("status", "--snapshot", str(tmp_path / "lake"), home=tmp_path / "h").stdout)
    live = json.loads(sfr("status", home=tmp_path / "h").stdout)
    assert status["tables"] == live["tables"] and status["schema_version"] == live["schema_version"]
    again = sfr("snapshot", str(tmp_path / "lake"), "--id", "first", home=tmp_path / "h", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


# -- a damaged warehouse (issue 18, item 7) ------------------------------------------------------
def _damaged_setup(tmp_path):
    """A workspace with real ingested photos and a snapshot of it; returns (home, manifest, lake, status)."""
    from pipelines.cli import main

    home, lake = tmp_path / "h", tmp_path / "lake"
    manifest = make_samples(tmp_path / "in", names=("astronaut", "coffee", "chelsea"), rollouts=3)
    assert main(["--home", str(home), "ingest", str(manifest)]) == 0
    assert main(["--home", str(home), "snapshot", str(lake)]) == 0
    return home, manifest, lake


def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sfr ")]
    assert len(err) == 1, err
    return err[0]


def test_a_truncated_warehouse_is_reported_by_every_command_and_restored(tmp_path, capsys):
    from pipelines.cli import main

    home, manifest, lake = _damaged_setup(tmp_path)
    capsys.readouterr()
    assert main(["--home", str(home), "status", "--check"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["integrity"] == {"quick": "ok", "full": "ok"}
    db = home / "warehouse.duckdb"
    subprocess.run(["truncate", "-s", str(db.stat().st_size // 2), str(db)], check=True)
    for cmd in (["status"], ["dataset", "list"], ["models", "list"], ["ingest", str(manifest)]):
        assert main(["--home", str(home), *cmd]) == 4, cmd
        line = _one_line_error(capsys)
        assert f"{db} is damaged" in line and "truncated" in line and "sfr restore" in line, line
    assert main(["--home", str(home), "restore", str(lake)]) == 0
    restored = json.loads(capsys.readouterr().out)
    assert Path(restored["kept_damaged_as"]).exists() and restored["rows"]["samples"] == 9
    assert main(["--home", str(home), "status", "--check"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["tables"] == before["tables"] and after["integrity"]["full"] == "ok"


def test_status_check_reads_every_table(tmp_path, capsys):
    """A damaged data block keeps the file's length (the cheap check passes) but fails `--check`."""
    import shutil

    from pipelines.cli import main
    from warehouse.db import Warehouse, WarehouseCorrupt

    home, _, _ = _damaged_setup(tmp_path)
    db = home / "warehouse.duckdb"
    pristine = tmp_path / "pristine.duckdb"
    shutil.copy(db, pristine)
    block, header = 262144, 3 * 4096
    found = None
    for b in range((db.stat().st_size - header) // block):  # the first block whose damage only a full read sees
        shutil.copy(pristine, db)
        with open(db, "r+b") as f:
            f.seek(header + b * block + 8)  # keep the block's stored checksum, overwrite its contents
            f.write(b"\xff" * (block - 8))
        try:
            failed = Warehouse.open(db).full_check()
        except WarehouseCorrupt:
            continue  # caught at open already (a metadata block)
        if failed:
            found = failed
            break
    assert found, "no data block of the warehouse is checked by a full read"
    capsys.readouterr()
    assert main(["--home", str(home), "status"]) == 0  # cheap: counts come from metadata
    capsys.readouterr()
    assert main(["--home", str(home), "status", "--check"]) == 4
    captured = capsys.readouterr()
    assert json.loads(captured.out)["integrity"]["full"]["failed_tables"] == found
    line = [x for x in captured.err.splitlines() if x.startswith("sfr ")]
    assert len(line) == 1 and "is damaged" in line[0] and next(iter(found)) in line[0] and "checksum" in line[0]
