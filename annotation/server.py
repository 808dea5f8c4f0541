"""Lifecycle of a local Label Studio server: `up`, `down`, `status`.

The server is the real `label-studio` 1.23 package from the project's venv, bound to
127.0.0.1, with its data under `<home>/labelstudio` and its local-files document root at
`<home>/media`. Telemetry (version check, Sentry, analytics) is switched off. An admin user
and a random 40-hex API token are generated on the first `up` and kept in
`<home>/labelstudio/credentials.json` (mode 0600); they never appear in logs, exceptions or
`status` output.

A team server is used instead of a local one when LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY
are set in the environment (see `annotation.client.connection`).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from warehouse.workspace import Workspace

HOST = "127.0.0.1"
DEFAULT_PORT = 8089
ADMIN_EMAIL = "admin@sfreward.local"
CREDENTIALS = "credentials.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
# A fresh database runs ~45 s of migrations on 2 cores; a migrated one starts in ~5 s.
DEFAULT_START_TIMEOUT_S = 300.0


class ServerError(RuntimeError):
    pass


@dataclass
class ServerPaths:
    """Where one local server keeps its state. `data_dir` holds the sqlite database, the
    Django `.env` (SECRET_KEY), credentials, pid and log; `media_root` is served as local files."""

    data_dir: Path
    media_root: Path

    @classmethod
    def for_workspace(cls, ws: Workspace) -> "ServerPaths":
        return cls(data_dir=ws.labelstudio, media_root=ws.media)

    @property
    def credentials(self) -> Path:
        return self.data_dir / CREDENTIALS

    @property
    def pid_file(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def log(self) -> Path:
        return self.data_dir / LOG_FILE


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the server itself: sockets in TIME_WAIT from a killed server do not block the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def load_credentials(paths: ServerPaths) -> dict | None:
    try:
        return json.loads(paths.credentials.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ServerError(f"{paths.credentials} is not valid JSON ({e.msg}); delete it only "
                          "together with the Label Studio data dir") from None


def _write_credentials(paths: ServerPaths, creds: dict) -> None:
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.credentials.with_suffix(".tmp")
    # Create with 0600 from the start: the token must never be world-readable, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, paths.credentials)


def ensure_credentials(paths: ServerPaths) -> dict:
    """The admin email, password and API token, generated once per data dir."""
    creds = load_credentials(paths)
    if creds is None:
        if (paths.data_dir / "label_studio.sqlite3").exists():
            raise ServerError(f"{paths.data_dir} holds a Label Studio database but no {CREDENTIALS}; "
                              "the admin token cannot be recovered: move the data dir away and run up again")
        creds = {"email": ADMIN_EMAIL, "password": secrets.token_urlsafe(18),
                 "api_key": secrets.token_hex(20)}
        _write_credentials(paths, creds)
    return creds


def _read_pid(paths: ServerPaths) -> tuple[int, int] | None:
    """(pid, port) from the pid file, or None."""
    try:
        info = json.loads(paths.pid_file.read_text())
        return int(info["pid"]), int(info["port"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def healthy(base_url: str, timeout_s: float = 2.0) -> bool:
    try:
        r = httpx.get(f"{base_url}/health", timeout=timeout_s)
        return r.status_code == 200 and r.json().get("status") == "UP"
    except (httpx.HTTPError, ValueError):
        return False


def server_env(paths: ServerPaths, creds: dict) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(paths.data_dir),
        "LABEL_STUDIO_USERNAME": creds["email"],
        "LABEL_STUDIO_PASSWORD": creds["password"],
        "LABEL_STUDIO_USER_TOKEN": creds["api_key"],
        # Legacy (non-JWT) tokens must be enabled when the organisation is created (first start).
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(paths.media_root),
        "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        # Only so that webhooks may reach a receiver on 127.0.0.1.
        "SSRF_PROTECTION_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _label_studio_exe() -> list[str]:
    exe = Path(sys.executable).parent / "label-studio"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("label-studio")
    if not found:
        raise ServerError("the label-studio server is not installed in this environment "
                          "(pip install label-studio==1.23.2)")
    return [found]


def status(paths: ServerPaths) -> dict:
    """State of the local server, without secrets."""
    info = _read_pid(paths)
    out = {"data_dir": str(paths.data_dir), "media_root": str(paths.media_root),
           "running": False, "pid": None, "base_url": None, "healthy": False,
           "credentials": paths.credentials.exists()}
    if info and _alive(info[0]):
        pid, port = info
        base_url = f"http://{HOST}:{port}"
        out.update(running=True, pid=pid, base_url=base_url, healthy=healthy(base_url))
    return out


def up(paths: ServerPaths, port: int | None = None,
       timeout_s: float = DEFAULT_START_TIMEOUT_S, db: str | None = None) -> dict:
    """Start the server unless it already runs; wait until /health answers UP.

    `db`: "sqlite" or "postgres" (see annotation.postgres); None keeps what this data dir was
    first started with (SQLite when new).

    Returns status() plus `started` (bool). Raises ServerError with the log's tail (which holds
    no secrets) if the process exits or does not answer in `timeout_s` seconds.
    """
    st = status(paths)
    db_env = _database_env(paths, db)
    if st["running"]:
        if st["healthy"] or _wait_healthy(st["base_url"], st["pid"], timeout_s):
            return {**status(paths), "started": False}
        raise ServerError(f"Label Studio (pid {st['pid']}) runs but {st['base_url']}/health does not "
                          f"answer; see {paths.log}, or `sfr labelstudio down` and up again")
    creds = ensure_credentials(paths)
    paths.media_root.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = DEFAULT_PORT if _port_is_free(DEFAULT_PORT) else free_port()
    elif not _port_is_free(port):
        # label-studio would silently move to another port; refuse instead.
        raise ServerError(f"port {port} on {HOST} is already in use; pick another with --port")
    cmd = _label_studio_exe() + ["start", "--no-browser", "--internal-host", HOST,
                                 "--port", str(port), "--data-dir", str(paths.data_dir)]
    log = open(paths.log, "ab")
    try:
        proc = subprocess.Popen(cmd, env={**server_env(paths, creds), **db_env}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(paths.data_dir))
    finally:
        log.close()
    paths.pid_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
    base_url = f"http://{HOST}:{port}"
    if not _wait_healthy(base_url, proc.pid, timeout_s, proc=proc):
        tail = _log_tail(paths)
        stop(paths)
        raise ServerError(f"Label Studio did not become healthy at {base_url} within {timeout_s:.0f} s; "
                          f"last log lines:\n{tail}")
    return {**status(paths), "started": True}


def _database_env(paths: ServerPaths, db: str | None) -> dict[str, str]:
    """Validates the database choice; for PostgreSQL starts the workspace's cluster (holds a secret)."""
    from annotation import postgres

    try:
        return postgres.database_env(paths.data_dir, db)
    except postgres.PostgresError as e:
        raise ServerError(str(e)) from None


def _wait_healthy(base_url: str, pid: int, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if proc is None and not _alive(pid):
            return False
        if healthy(base_url):
            return True
        time.sleep(0.5)
    return False


def _log_tail(paths: ServerPaths, n: int = 20) -> str:
    try:
        lines = paths.log.read_text(errors="replace").splitlines()[-n:]
    except FileNotFoundError:
        return "(no log)"
    creds = load_credentials(paths) or {}
    text = "\n".join(lines)
    for secret in (creds.get("api_key"), creds.get("password")):
        if secret:
            text = text.replace(secret, "***")
    return text


def stop(paths: ServerPaths, timeout_s: float = 20.0) -> dict:
    """Stop the server recorded in the pid file (its whole process group). Idempotent."""
    info = _read_pid(paths)
    stopped = False
    if info and _alive(info[0]):
        pid = info[0]
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid) and time.monotonic() < deadline + 10:
                _reap(pid)
                time.sleep(0.1)
        _reap(pid)
        stopped = True
    paths.pid_file.unlink(missing_ok=True)
    return {**status(paths), "stopped": stopped}


def kill(paths: ServerPaths) -> None:
    """SIGKILL the server at once, leaving the pid file (simulates a crash; for tests)."""
    info = _read_pid(paths)
    if info and _alive(info[0]):
        _signal_group(info[0], signal.SIGKILL)
        for _ in range(100):
            _reap(info[0])
            if not _alive(info[0]):
                break
            time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# -- workspace-level API --------------------------------------------------------------------
def up_workspace(ws: Workspace, port: int | None = None,
                 timeout_s: float = DEFAULT_START_TIMEOUT_S, db: str | None = None) -> dict:
    return up(ServerPaths.for_workspace(ws), port=port, timeout_s=timeout_s, db=db)


def down_workspace(ws: Workspace) -> dict:
    return stop(ServerPaths.for_workspace(ws))


def status_workspace(ws: Workspace) -> dict:
    return status(ServerPaths.for_workspace(ws))


def ensure_server(ws: Workspace, port: int | None = None) -> tuple[str, str]:
    """(base_url, api_key) of the Label Studio to use: the team server from
    LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY if set, else the workspace's local server, started
    if it does not run."""
    url, key = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_API_KEY")
    if url:
        if not key:
            raise ServerError("LABEL_STUDIO_URL is set but LABEL_STUDIO_API_KEY is not; set both "
                              "to use a team server, or neither for the local one")
        return url.rstrip("/"), key
    paths = ServerPaths.for_workspace(ws)
    st = up(paths, port=port)
    return st["base_url"], ensure_credentials(paths)["api_key"]
