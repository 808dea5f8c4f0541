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

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from annotation import processes
from annotation.processes import HOST
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)

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


def make_private(paths: ServerPaths) -> None:
    """Make the data dir the owner's alone: 0700 folders, 0600 files. It holds the admin's API
    token in plaintext (sqlite `authtoken_token`), Django's SECRET_KEY (`.env`), the admin
    password (credentials.json) and every annotation."""
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.data_dir, 0o700)
    for root, dirs, files in os.walk(paths.data_dir):
        for name in dirs + files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, 0o700 if os.path.isdir(p) else 0o600)


def permission_problems(paths: ServerPaths, limit: int = 20) -> list[str]:
    """The data dir's entries that group or others may access (at most `limit`, then a count)."""
    if not paths.data_dir.exists():
        return []
    bad = []
    entries = [str(paths.data_dir)] + [os.path.join(r, n) for r, ds, fs in os.walk(paths.data_dir) for n in ds + fs]
    for p in entries:
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            bad.append(f"{p} is mode {stat.S_IMODE(st.st_mode):04o}, open to group/others")
    if len(bad) > limit:
        bad = bad[:limit] + [f"... and {len(bad) - limit} more"]
    return bad


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
        # Annotators join by the organisation's invite link only (`sfr labelstudio invite`):
        # otherwise anyone who reaches the server can sign up and edit every annotation.
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
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
           "credentials": paths.credentials.exists(), "permission_problems": permission_problems(paths)}
    if info and processes.alive(info[0]) and processes.is_server_for(info[0], paths.data_dir):
        pid, port = info
        base_url = f"http://{HOST}:{port}"
        out.update(running=True, pid=pid, base_url=base_url, healthy=healthy(base_url))
    elif info:
        what = ("is not this data dir's Label Studio (a copied workspace, or a reused pid); it is left alone"
                if processes.alive(info[0]) else "is no longer running")
        out["stale_pid_file"] = f"{paths.pid_file} names pid {info[0]}, which {what}"
    return out


def up(paths: ServerPaths, port: int | None = None,
       timeout_s: float = DEFAULT_START_TIMEOUT_S, db: str | None = None) -> dict:
    """Start the server unless it already runs; wait until /health answers UP.

    `db`: "sqlite" or "postgres" (see annotation.postgres); None keeps what this data dir was
    first started with (SQLite when new).

    Returns status() plus `started` (bool). Raises ServerError with the log's tail (which holds
    no secrets) if the process exits or does not answer in `timeout_s` seconds.
    """
    make_private(paths)  # also fixes data dirs made before this was enforced
    st = status(paths)
    db_env = _database_env(paths, db)
    if st["running"]:
        if st["healthy"] or _wait_healthy(st["base_url"], st["pid"], timeout_s):
            return {**status(paths), "started": False}
        raise ServerError(f"Label Studio (pid {st['pid']}) runs but {st['base_url']}/health does not "
                          f"answer; see {paths.log}, or `sfr labelstudio down` and up again")
    info = _read_pid(paths)
    if info and _ours(info[0], paths):
        stop(paths)  # what is left of a crashed server of this data dir (its leader is gone)
    elif info:
        log.warning("%s", st["stale_pid_file"])
        paths.pid_file.unlink(missing_ok=True)
    creds = ensure_credentials(paths)
    paths.media_root.mkdir(parents=True, exist_ok=True)
    with _start_lock():
        return _start(paths, creds, db_env, port, timeout_s)


@contextlib.contextmanager
def _start_lock():
    """Held from choosing the port until the server answers: two `up` at once on one machine
    (two workspaces, two demos) would otherwise both find the default port free, and the
    second label-studio would silently move to another port while /health of the first
    answered for it: its clients then reach the first server and get "Invalid token"."""
    fd = os.open(Path(tempfile.gettempdir()) / "sfr-labelstudio-start.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _start(paths: ServerPaths, creds: dict, db_env: dict[str, str], port: int | None,
           timeout_s: float) -> dict:
    if port is None:
        port = DEFAULT_PORT if processes.port_is_free(DEFAULT_PORT) else free_port()
    elif not processes.port_is_free(port):
        # label-studio would silently move to another port; refuse instead.
        raise ServerError(f"port {port} on {HOST} is already in use; pick another with --port")
    cmd = _label_studio_exe() + ["start", "--no-browser", "--internal-host", HOST,
                                 "--port", str(port), "--data-dir", str(paths.data_dir)]
    logf = os.fdopen(os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    try:
        proc = subprocess.Popen(cmd, env={**server_env(paths, creds), **db_env}, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(paths.data_dir),
                                umask=0o077)  # whatever it creates (database, uploads, exports) is the owner's
    finally:
        logf.close()
    fd = os.open(paths.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"pid": proc.pid, "port": port}))
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
        if proc is None and not processes.alive(pid):
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
    """Stop the server recorded in the pid file (its whole process group). Idempotent.

    Only a process group that is this data dir's Label Studio is signalled (see `_ours`).
    Returns only once every process of the old group is gone and its port is free again
    (bounded), so that `up` on the same port right after cannot find it still taken.
    """
    info = _read_pid(paths)
    stopped = False
    if info and _ours(info[0], paths):
        pid = info[0]
        processes.signal_group(pid, signal.SIGTERM)
        # The whole group, not only the leader: a child (or a thread of a leader that already
        # shows as a zombie) may still hold the listening socket.
        if not processes.wait_gone(pid, None, timeout_s):
            processes.signal_group(pid, signal.SIGKILL)
        _wait_released(info)
        stopped = True
    paths.pid_file.unlink(missing_ok=True)
    return {**status(paths), "stopped": stopped}


def kill(paths: ServerPaths) -> None:
    """SIGKILL the server at once, leaving the pid file (simulates a crash; for tests).
    Returns once the old process group is gone and its port is free (bounded)."""
    info = _read_pid(paths)
    if info and _ours(info[0], paths):
        processes.signal_group(info[0], signal.SIGKILL)
        _wait_released(info)


# Bound on waiting for a stopped server's processes to vanish and its port to be released.
RELEASE_TIMEOUT_S = 60.0


def _wait_released(info: tuple[int, int], timeout_s: float = RELEASE_TIMEOUT_S) -> None:
    pid, port = info
    if processes.wait_gone(pid, None, timeout_s / 2):
        if processes.wait_gone(pid, port, timeout_s / 2):
            return
        raise ServerError(f"Label Studio (pid {pid}) is gone but port {port} on {HOST} is still in use "
                          f"after {timeout_s:.0f} s; another program holds it")
    processes.signal_group(pid, signal.SIGKILL)
    if not processes.wait_gone(pid, port, timeout_s / 2):
        left = processes.group_members(pid)
        raise ServerError(f"Label Studio's process group {pid} did not exit after SIGKILL (left: {left}); "
                          f"port {port} may still be in use. Check `ps -g {pid}`")


def _ours(pgid: int, paths: ServerPaths) -> bool:
    """Whether process group `pgid` holds a `label-studio start --data-dir <this data dir>`
    process. A pid file copied with the workspace, or left from before a reboot, may name
    another workspace's server or an unrelated program: neither is adopted or signalled."""
    return any(processes.is_server_for(m, paths.data_dir) for m in processes.group_members(pgid))


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
