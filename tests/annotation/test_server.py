"""The local Label Studio server: status without secrets, credentials on disk only, loopback
binding, telemetry off, idempotent up, down by pid, team-server mode from the environment;
signup by invitation only, a private data dir, edits of someone else's annotation flagged and
left out of datasets, and a copied workspace that never adopts the original's server (issue 18)."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat

import httpx
import pytest

from annotation import processes, server
from annotation.client import connection
from pipelines.cli import main as sfr


def _cli(capsys, home, *args) -> dict:
    assert sfr(["--home", str(home), *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_json_has_no_secrets(labelstudio, capsys):
    home = labelstudio.workspace.home
    out = _cli(capsys, home, "labelstudio", "status")
    assert out["running"] and out["healthy"] and out["base_url"] == labelstudio.base_url
    text = json.dumps(out)
    assert labelstudio.api_key not in text and labelstudio.password not in text


def test_credentials_are_private_and_work(labelstudio):
    path = labelstudio.paths.credentials
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = json.loads(path.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", creds["api_key"])
    ok = httpx.get(f"{labelstudio.base_url}/api/current-user/whoami",
                   headers={"Authorization": f"Token {creds['api_key']}"})
    assert ok.status_code == 200 and ok.json()["email"] == creds["email"]
    bad = httpx.get(f"{labelstudio.base_url}/api/current-user/whoami", headers={"Authorization": "Token " + "0" * 40})
    assert bad.status_code == 401


def test_secrets_stay_out_of_the_log(labelstudio):
    log = labelstudio.paths.log.read_text(errors="replace")
    assert log  # the server did write a log
    assert labelstudio.api_key not in log and labelstudio.password not in log


def test_bound_to_loopback_with_telemetry_off(labelstudio):
    pid = json.loads(labelstudio.paths.pid_file.read_text())["pid"]
    env = dict(kv.split("=", 1) for kv in open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv)
    assert env["LATEST_VERSION_CHECK"] == "false" and env["COLLECT_ANALYTICS"] == "false"
    assert env["SENTRY_DSN"] == "" and env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(labelstudio.workspace.media)
    port_hex = f"{labelstudio.port:04X}"
    listening = [line.split()[1] for line in open("/proc/net/tcp").read().splitlines()[1:]
                 if line.split()[1].endswith(":" + port_hex) and line.split()[3] == "0A"]
    assert listening == [f"0100007F:{port_hex}"]


def test_up_is_idempotent(labelstudio, capsys):
    out = _cli(capsys, labelstudio.workspace.home, "labelstudio", "up")
    assert out["started"] is False and out["base_url"] == labelstudio.base_url


def test_port_in_use_is_refused(labelstudio, tmp_path):
    paths = server.ServerPaths(tmp_path / "ls", tmp_path / "media")
    with pytest.raises(server.ServerError, match=f"port {labelstudio.port} .* in use"):
        server.up(paths, port=labelstudio.port)
    assert not paths.pid_file.exists()


def test_team_server_from_environment(labelstudio, monkeypatch, tmp_path):
    from warehouse.workspace import Workspace

    ws = Workspace.open(tmp_path / "other")
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.base_url + "/")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.api_key)
    assert server.ensure_server(ws) == (labelstudio.base_url, labelstudio.api_key)
    conn = connection(ws)
    assert conn.base_url == labelstudio.base_url and labelstudio.api_key not in repr(conn)
    assert not server.status_workspace(ws)["running"]  # nothing started locally
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    with pytest.raises(server.ServerError, match="LABEL_STUDIO_API_KEY"):
        server.ensure_server(ws)


def _signup(base_url: str, email: str, password: str, link: str | None = None) -> tuple[httpx.Response, httpx.Client]:
    """What a browser does: GET the signup page for the CSRF cookie, POST the form. Returns the
    response and the client (whose session is logged in after a successful signup)."""
    url = link or f"{base_url}/user/signup/"
    c = httpx.Client(timeout=60)
    c.get(url)
    r = c.post(url, data={"csrfmiddlewaretoken": c.cookies["csrftoken"], "email": email, "password": password})
    return r, c


def _emails(labelstudio) -> set[str]:
    r = httpx.get(f"{labelstudio.base_url}/api/users/", headers={"Authorization": f"Token {labelstudio.api_key}"})
    return {u["email"] for u in r.json()}


def test_signup_without_an_invite_link_is_refused(labelstudio):
    r, c = _signup(labelstudio.base_url, "intruder@example.com", "Intruder-pass-2026")
    c.close()
    assert r.status_code == 403
    assert "intruder@example.com" not in _emails(labelstudio)


def test_an_invited_annotator_edits_another_ones_annotation_flagged_and_excluded(labelstudio, tmp_path, capsys):
    """A second (invited) user PATCHes the admin's annotation through the API: sync records the
    editor and flags it; curation leaves it out and reports it."""
    from annotation.push import push_batch
    from annotation.sync import sync_project
    from tests.faults.test_labelstudio_kills import _result
    from tests.fixtures.labelstudio import seed_warehouse
    from warehouse.curation import CurationConfig, build_dataset
    from warehouse.db import Warehouse

    ws, key = labelstudio.workspace, "editors"
    seeded = seed_warehouse(ws, tmp_path / "incoming", names=("astronaut",), rollouts=2)
    s = push_batch(ws, key, batch_id=seeded["batch_id"], conn=labelstudio.conn)
    admin = {"Authorization": f"Token {labelstudio.api_key}"}
    tasks = httpx.get(f"{labelstudio.base_url}/api/tasks", params={"project": s.ls_project_id, "fields": "all"},
                      headers=admin).json()["tasks"]
    ann = {t["id"]: httpx.post(f"{labelstudio.base_url}/api/tasks/{t['id']}/annotations/", headers=admin,
                               json={"result": _result(t, 4)}).json()["id"] for t in tasks}

    # The lead's invite link (`sfr labelstudio invite`) is the only way in.
    assert sfr(["--home", str(ws.home), "labelstudio", "invite"]) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith(f"{labelstudio.base_url}/user/signup/?token=")
    r, c = _signup(labelstudio.base_url, "annotator2@example.com", "Annotator2-pass-2026", link)
    try:
        assert r.status_code == 302 and "annotator2@example.com" in _emails(labelstudio)
        other = {"Authorization": "Token " + c.get(f"{labelstudio.base_url}/api/current-user/token").json()["token"]}
    finally:
        c.close()

    edited, untouched = sorted(ann.values())
    task = next(t for t in tasks if ann[t["id"]] == edited)
    r = httpx.patch(f"{labelstudio.base_url}/api/annotations/{edited}/", headers=other,
                    json={"result": _result(task, 1)})
    assert r.status_code == 200  # Label Studio Community lets any member do this

    summary = sync_project(ws, key, conn=labelstudio.conn)
    assert summary.created == 2 and summary.edited_by_other == 1
    wh = Warehouse.open(ws)
    rows = {r[0]: r[1:] for r in wh.query("SELECT ls_annotation_id, annotator_id, updated_by, edited_by_other "
                                          "FROM annotations WHERE project_key = ?", [key])}
    author, editor, flagged = rows[edited]
    assert flagged and author != editor and editor.startswith("ls:")
    assert rows[untouched][2] is False and rows[untouched][1] == rows[untouched][0]

    v = build_dataset(ws, CurationConfig(project_keys=[key], dedupe_hamming=-1, max_item_std=5.0))
    assert v.exclusion_counts["annotation:edited_by_other"] == 1
    (excl,) = wh.query("SELECT item_id, detail FROM dataset_exclusions WHERE dataset_id = ? "
                       "AND reason = 'edited_by_other'", [v.dataset_id])
    assert excl[0] == f"{key}:{edited}" and editor in excl[1] and author in excl[1]
    sample_of = {ann[t["id"]]: t["data"]["sample_id"] for t in tasks}
    in_ds = {r[0] for r in wh.query("SELECT sample_id FROM dataset_rows WHERE dataset_id = ?", [v.dataset_id])}
    assert sample_of[untouched] in in_ds and sample_of[edited] not in in_ds  # no usable label left


def test_data_dir_is_private_and_status_reports_loose_modes(labelstudio, capsys):
    paths = labelstudio.paths
    pid = json.loads(paths.pid_file.read_text())["pid"]
    umask = next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("Umask:"))
    assert umask == "0077"
    assert stat.S_IMODE(paths.data_dir.stat().st_mode) == 0o700
    db = paths.data_dir / "label_studio.sqlite3"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and server.permission_problems(paths) == []
    os.chmod(db, 0o644)   # how every existing workspace was (the admin token is in this file)
    os.chmod(paths.data_dir, 0o755)
    assert sfr(["--home", str(labelstudio.workspace.home), "labelstudio", "status"]) == 1
    captured = capsys.readouterr()
    problems = json.loads(captured.out)["permission_problems"]
    assert any(p.startswith(f"{db} is mode 0644") for p in problems) and str(db) in captured.err
    # `up` on an existing workspace (here: already running) makes it private again.
    assert _cli(capsys, labelstudio.workspace.home, "labelstudio", "up")["permission_problems"] == []
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(paths.data_dir.stat().st_mode) == 0o700


def test_a_copied_workspace_neither_adopts_nor_stops_the_original(labelstudio, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(labelstudio.workspace.home, copy, symlinks=True)
    assert (copy / "labelstudio" / "server.pid").exists()  # the original's pid file came along
    assert sfr(["--home", str(copy), "labelstudio", "status"]) == 1
    st = json.loads(capsys.readouterr().out)
    assert not st["running"] and "not this data dir's Label Studio" in st["stale_pid_file"]
    out = _cli(capsys, copy, "labelstudio", "down")
    assert out["stopped"] is False and not (copy / "labelstudio" / "server.pid").exists()
    assert server.healthy(labelstudio.base_url)  # the original still runs
    (copy / "labelstudio" / "server.pid").write_text(labelstudio.paths.pid_file.read_text())
    started = _cli(capsys, copy, "labelstudio", "up", "--port", str(server.free_port()))
    try:
        assert started["started"] and started["base_url"] != labelstudio.base_url
    finally:
        server.stop(server.ServerPaths(copy / "labelstudio", copy / "media"))
    assert server.healthy(labelstudio.base_url)


def test_down_stops_by_pid(labelstudio, capsys):
    pid = json.loads(labelstudio.paths.pid_file.read_text())["pid"]
    out = _cli(capsys, labelstudio.workspace.home, "labelstudio", "down")
    assert out["stopped"] and not out["running"]
    assert not labelstudio.paths.pid_file.exists()
    assert not processes.alive(pid)  # gone (or a reaped/zombie child of this process)
    assert not server.healthy(labelstudio.base_url)
    assert _cli(capsys, labelstudio.workspace.home, "labelstudio", "down")["stopped"] is False
