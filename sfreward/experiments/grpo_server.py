"""Start `sfr serve` as a subprocess on 127.0.0.1 for the GRPO experiment (real HTTP), with a
fresh random token passed through the environment (never on the command line or in logs)."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


class NoProductionModel(RuntimeError):
    """The workspace has no registered model under the requested alias."""


def check_model(home: str | os.PathLike | None, model: str) -> str:
    """The model id `model` resolves to in the workspace, or NoProductionModel saying what to do."""
    from sfreward import registry
    from warehouse.workspace import Workspace

    if Path(model).is_dir():
        return str(model)
    try:
        ws = Workspace.open(home, create=False)
        return registry.resolve(ws, model)
    except (FileNotFoundError, registry.RegistryError) as e:
        raise NoProductionModel(
            f"no registered SFReward model {model!r} in the workspace ({e}). Run `sfr demo` (the whole platform "
            f"end to end, ~5-10 min; it registers its model as `candidate`: pass --model candidate) or "
            f"`sfr train` then `sfr models promote <model_id>` first, or pass --model <model id, alias or "
            f"directory>.") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`python -m pipelines.cli --home HOME serve --model MODEL --port P` until closed."""

    def __init__(self, home: str | os.PathLike | None, model: str, log_path: Path, startup_s: float = 180.0):
        self.home, self.model, self.log_path, self.startup_s = home, model, log_path, startup_s
        self.token = secrets.token_urlsafe(32)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ServeProcess":
        env = dict(os.environ, SFR_SERVER_TOKEN=self.token, OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "pipelines.cli"] + (["--home", str(self.home)] if self.home else []) + \
              ["serve", "--model", str(self.model), "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"`sfr serve` exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"`sfr serve` did not answer /health within {self.startup_s:.0f} s; see {self.log_path}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __exit__(self, *exc) -> None:
        self.close()
