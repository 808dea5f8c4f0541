"""The local Label Studio server: status without secrets, credentials on disk only, loopback
binding, telemetry off, idempotent up, down by pid, team-server mode from the environment."""
from __future__ import annotations

import json
import re
import stat

import httpx
import pytest

from annotation import server
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


def test_down_stops_by_pid(labelstudio, capsys):
    pid = json.loads(labelstudio.paths.pid_file.read_text())["pid"]
    out = _cli(capsys, labelstudio.workspace.home, "labelstudio", "down")
    assert out["stopped"] and not out["running"]
    assert not labelstudio.paths.pid_file.exists()
    assert not server._alive(pid)  # gone (or a reaped/zombie child of this process)
    assert not server.healthy(labelstudio.base_url)
    assert _cli(capsys, labelstudio.workspace.home, "labelstudio", "down")["stopped"] is False
