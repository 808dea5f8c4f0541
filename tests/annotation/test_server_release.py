"""Stopping the local Label Studio waits (bounded) until its whole process group is gone and its
port is free, so a restart on the same port cannot find it still taken (issue 18, item 13).

The slow teardown that machine load causes is reproduced deterministically: a stand-in for the
server's process tree whose leader exits on SIGTERM at once while a child of the same group
keeps the listening socket and ignores SIGTERM for HOLD_S seconds. Its command line is the one
`up` starts (`label-studio start ... --data-dir <dir>`), so the pid-file checks accept it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotation import processes, server

HOLD_S = 3.0

STANDIN = r'''
import os, signal, socket, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
ready, hold = sys.argv[-2], float(sys.argv[-1])
if os.fork() == 0:
    termed = []
    signal.signal(signal.SIGTERM, lambda *_: termed.append(time.monotonic()))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    open(ready, "w").close()
    while not termed or time.monotonic() - termed[0] < hold:
        time.sleep(0.05)
    os._exit(0)
signal.pause()  # the leader: SIGTERM ends it at once
'''


@pytest.fixture
def standin(tmp_path):
    """(ServerPaths, port, leader Popen) of a running stand-in whose child holds the port."""
    exe = tmp_path / "bin" / "label-studio"
    exe.parent.mkdir()
    exe.write_text(STANDIN)
    paths = server.ServerPaths(tmp_path / "ls", tmp_path / "media")
    paths.data_dir.mkdir()
    port, ready = server.free_port(), tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, str(exe), "start", "--port", str(port), "--data-dir",
                             str(paths.data_dir), str(ready), str(HOLD_S)], start_new_session=True)
    deadline = time.monotonic() + 60
    while not ready.exists():  # an event, not a delay: the child has bound the port
        assert proc.poll() is None and time.monotonic() < deadline, "stand-in did not start"
        time.sleep(0.05)
    paths.pid_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
    try:
        yield paths, port, proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_stop_waits_for_the_whole_group_and_the_port(standin):
    paths, port, proc = standin
    assert not processes.port_is_free(port)
    out = server.stop(paths)
    assert out["stopped"] and not out["running"]
    # Returned only after the child (which outlived the leader by HOLD_S) let go of the port.
    assert processes.group_members(proc.pid) == []
    assert processes.port_is_free(port)
    assert not paths.pid_file.exists()


def test_stop_kills_a_group_that_ignores_sigterm_past_the_timeout(standin):
    paths, port, proc = standin
    server.stop(paths, timeout_s=0.5)  # shorter than HOLD_S: escalates to SIGKILL
    assert processes.group_members(proc.pid) == [] and processes.port_is_free(port)


def test_up_after_a_crash_clears_the_leftovers_first(standin):
    """Only the leader died (an OOM kill, say); its child still holds the port. `up` on that port
    stops what is left of this data dir's server instead of refusing "port in use"."""
    paths, port, proc = standin
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not processes.port_is_free(port)
    st = server.status(paths)
    assert not st["running"] and "no longer running" in st["stale_pid_file"]
    server.stop(paths)  # what `up` does first; `up` itself would then start label-studio
    assert processes.port_is_free(port) and processes.group_members(proc.pid) == []


def test_kill_returns_once_the_port_is_free(standin):
    paths, port, proc = standin
    server.kill(paths)
    assert processes.group_members(proc.pid) == [] and processes.port_is_free(port)
    assert paths.pid_file.exists()  # a crash leaves the pid file behind


def test_a_foreign_group_is_never_signalled(tmp_path, standin):
    """The same stand-in seen from another data dir (a copied workspace's pid file): not ours."""
    paths, port, proc = standin
    other = server.ServerPaths(tmp_path / "copy" / "ls", tmp_path / "copy" / "media")
    other.data_dir.mkdir(parents=True)
    other.pid_file.write_text(paths.pid_file.read_text())
    st = server.status(other)
    assert not st["running"] and "not this data dir's Label Studio" in st["stale_pid_file"]
    server.kill(other)
    out = server.stop(other)
    assert out["stopped"] is False and not other.pid_file.exists()
    assert proc.poll() is None and not processes.port_is_free(port)  # untouched


def test_an_unrelated_process_named_in_the_pid_file_is_left_alone(tmp_path):
    """`setsid sleep 600` in server.pid: status says so, down removes the stale file, sleep lives."""
    paths = server.ServerPaths(tmp_path / "ls", tmp_path / "media")
    paths.data_dir.mkdir()
    sleeper = subprocess.Popen(["setsid", "sleep", "600"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{sleeper.pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline  # setsid has exec'd sleep (same pid)
            time.sleep(0.02)
        paths.pid_file.write_text(json.dumps({"pid": sleeper.pid, "port": 1}))
        st = server.status(paths)
        assert not st["running"] and f"pid {sleeper.pid}" in st["stale_pid_file"]
        server.kill(paths)
        assert server.stop(paths)["stopped"] is False
        assert sleeper.poll() is None and processes.alive(sleeper.pid)
        assert not paths.pid_file.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# A stand-in for a slow label-studio start: it answers /health only after DELAY_S, and when its
# port is already taken it moves to a free one without a word, as label-studio does.
SLOW_START = r'''
import http.server, socket, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
time.sleep(float(DELAY_S))
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status": "UP"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
try:
    srv = http.server.HTTPServer(("127.0.0.1", port), Health)
except OSError:
    srv = http.server.HTTPServer(("127.0.0.1", 0), Health)
srv.serve_forever()
'''


def test_two_starts_at_once_get_two_ports(tmp_path, monkeypatch):
    """Two workspaces started at the same moment (two demos on one machine) must not both take
    the default port: the second server would move elsewhere while the first one's /health
    answered for it, and its clients would reach the wrong server."""
    import threading

    exe = tmp_path / "bin" / "label-studio"
    exe.parent.mkdir()
    exe.write_text(SLOW_START.replace("DELAY_S", "1.5"))
    monkeypatch.setattr(server, "_label_studio_exe", lambda: [sys.executable, str(exe)])
    monkeypatch.setattr(server, "DEFAULT_PORT", server.free_port())
    paths = [server.ServerPaths(tmp_path / f"ls{i}", tmp_path / f"media{i}") for i in range(2)]
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            results[i] = server.up(paths[i], timeout_s=60)
        except BaseException as e:  # reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        ports = [json.loads(p.pid_file.read_text())["port"] for p in paths]
        assert len(set(ports)) == 2 and server.DEFAULT_PORT in ports
        assert {r["base_url"] for r in results.values()} == {f"http://127.0.0.1:{p}" for p in ports}
        # Each workspace's server is its own process, listening where its pid file says.
        for p, port in zip(paths, ports):
            pid = json.loads(p.pid_file.read_text())["pid"]
            assert processes.alive(pid) and not processes.port_is_free(port)
    finally:
        for p in paths:
            server.stop(p)
