"""The trainer process killed with SIGKILL mid-run (not a polite stop) and started again with
the same command resumes from its last checkpoint and ends with the same weights as a run that
was never interrupted (issue 9)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["max_steps=12", "ckpt_every=2", "batch_size=4", "grad_accum=2", "warmup_steps=2",
          "eval_split=", "num_threads=1", "log_every=1", "model.dropout=0.1"]


def _cmd(data_dir, out_dir):
    return [sys.executable, "-m", "sfreward.train", f"data_dir={data_dir}", f"out_dir={out_dir}", *COMMON]


def _weights(run_dir: Path) -> dict:
    (f,) = run_dir.rglob("model.safetensors")
    return load_file(str(f))


def test_sigkill_mid_run_then_resume_gives_identical_weights(sfreward_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    full = subprocess.run(_cmd(sfreward_dataset, tmp_path / "full"), env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert full.returncode == 0, full.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(sfreward_dataset, out), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list(out.glob("checkpoints/step-000000[4-9].pt")):
        assert proc.poll() is None, "trainer finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not list(out.rglob("model.safetensors")), "killed before the end: no final model yet"
    again = subprocess.run(_cmd(sfreward_dataset, out), env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resum" in (again.stderr + again.stdout).lower()
    a, b = _weights(tmp_path / "full"), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
