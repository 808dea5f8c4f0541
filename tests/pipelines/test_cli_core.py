"""`sfr ingest` and `sfr status` as a user runs them (subprocesses)."""
import json
import os
import subprocess
import sys

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
