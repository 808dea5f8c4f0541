"""Security checks that need the real pieces (issue 9): Label Studio's local file serving stays
inside the workspace's media root; every dependency is pinned."""
import re
import tomllib
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd",
                                  "images/../../labelstudio/credentials.json"])
def test_local_files_cannot_escape_the_media_root(labelstudio, path):
    r = httpx.get(f"{labelstudio.base_url}/data/local-files/", params={"d": path},
                  headers={"Authorization": f"Token {labelstudio.api_key}"}, timeout=30)
    # Label Studio 1.23.2 answers a traversal with 404 or, for `..` that escapes its root, 500
    # (Django's SuspiciousFileOperation): either way nothing is served.
    assert r.status_code in (400, 403, 404, 500), r.status_code
    assert "root:" not in r.text and labelstudio.api_key not in r.text


def test_every_dependency_is_pinned():
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line.strip())
            assert m, f"requirements.lock line not pinned with ==: {line!r}"
            lock[m.group(1).lower().replace("_", "-")] = m.group(2)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
    for dep in wanted:
        name = re.split(r"[=<>!\[ ;]", dep, maxsplit=1)[0].lower().replace("_", "-")
        assert name in lock, f"{name} is not pinned in requirements.lock"
        if "==" in dep:
            assert dep.split("==")[1].strip() == lock[name], f"{dep} disagrees with the lock ({lock[name]})"
