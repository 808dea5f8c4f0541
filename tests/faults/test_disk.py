"""Disk full and read-only workspaces (issue 9): a clear error, nothing corrupted, and a rerun
after the problem is fixed completes. Uses real file systems (a size-limited tmpfs, a read-only
bind mount), so these tests need root; they skip with the reason otherwise."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.core import make_samples
from warehouse.db import Warehouse
from warehouse.workspace import Workspace


def _mount(*args) -> None:
    p = subprocess.run(["mount", *args], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount ({p.stderr.strip()}); run the suite as root for the disk tests")


@pytest.fixture
def small_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a size-limited tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    _mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt))
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def sfr(home, *args):
    env = {**os.environ, "SFR_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_disk_full_during_ingest(small_fs, tmp_path):
    manifest = make_samples(tmp_path / "in", names=("astronaut", "chelsea", "coffee", "rocket"), rollouts=6, size=256)
    home = small_fs / "home"
    p = sfr(home, "ingest", str(manifest))
    assert p.returncode == 3, p.stderr
    assert "no space left" in p.stderr.lower() or "could not write" in p.stderr
    assert "Traceback" not in p.stderr
    # Grow the file system (as an admin would free space) and rerun: everything lands once.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    wh = Warehouse.open(Workspace.open(home))
    before = wh.query("SELECT count(*) FROM samples")[0][0]
    assert before < 24
    p = sfr(home, "ingest", str(manifest))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["ingested"] + out["duplicates"] == 24
    assert wh.query("SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(24, 24)]
    # Every stored image is complete (decodes) even though a write failed mid-way before.
    from PIL import Image

    from warehouse.imagestore import LocalImageStore
    store = LocalImageStore(Workspace.open(home))
    for (sha,) in wh.query("SELECT sha256 FROM images"):
        Image.open(store.local_path(sha)).load()


def test_read_only_workspace(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("read-only test needs root for a read-only bind mount (root ignores file modes)")
    manifest = make_samples(tmp_path / "in", names=("chelsea",), rollouts=2)
    home = tmp_path / "home"
    assert sfr(home, "ingest", str(manifest)).returncode == 0
    wh_file = home / "warehouse.duckdb"
    digest = wh_file.read_bytes()
    ro = tmp_path / "ro"
    ro.mkdir()
    _mount("--bind", "-o", "ro", str(home), str(ro))
    try:
        more = make_samples(tmp_path / "more", names=("coffee",), rollouts=1)
        p = sfr(ro, "ingest", str(more))
        assert p.returncode == 3, p.stderr
        assert "read-only" in p.stderr and "Traceback" not in p.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert wh_file.read_bytes() == digest  # untouched
    assert Warehouse.open(Workspace.open(home)).query("SELECT count(*) FROM samples") == [(2,)]
