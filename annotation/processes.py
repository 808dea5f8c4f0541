"""Processes of a local server: is a pid the server of a given data dir (its command line),
which processes of its group are left, and waiting (bounded) until they are gone and the port
is free. Linux only (reads /proc)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

HOST = "127.0.0.1"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the server itself: sockets in TIME_WAIT from a killed server do not block the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def alive(pid: int) -> bool:
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


def group_members(pgid: int) -> list[int]:
    """Pids of processes in process group `pgid` that still hold resources (a zombie whose
    threads have all exited holds none; a zombie leader with live threads still does)."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pgid] if alive(pgid) else []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            if fields[0] == "Z" and len(os.listdir(f"/proc/{name}/task")) <= 1:
                continue
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        out.append(int(name))
    return out


def wait_gone(pgid: int, port: int | None, timeout_s: float) -> bool:
    """Wait until no process of group `pgid` is left (reaping our own child) and, if `port` is
    given, that port is free. True when both hold within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        reap(pgid)
        if not group_members(pgid) and (port is None or port_is_free(port)):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="surrogateescape") for a in raw.split(b"\0") if a]


def is_server_for(pid: int, data_dir: Path) -> bool:
    argv = cmdline(pid)
    starts = [i for i, a in enumerate(argv[:-1]) if os.path.basename(a) == "label-studio" and argv[i + 1] == "start"]
    if not starts:
        return False
    rest = argv[starts[0] + 2:]
    given = None
    for i, a in enumerate(rest):
        if a == "--data-dir" and i + 1 < len(rest):
            given = rest[i + 1]
        elif a.startswith("--data-dir="):
            given = a.split("=", 1)[1]
    return given is not None and os.path.realpath(given) == os.path.realpath(data_dir)


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
