#!/usr/bin/env bash
# One idempotent set-up step: creates .venv and installs the project with its pinned
# dependencies (requirements.lock). With --test it also installs what the tests need outside
# Python (Debian's chromium for the browser test, Debian's postgresql for Label Studio and
# Dagster on PostgreSQL). Re-running is a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup: Python 3.11 is required (found $($PY --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [ "$(cat .venv/.sfr-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing dependencies (first time: a few minutes)" >&2
  # A dropped connection mid-download must not fail the set-up: pip retries connections and
  # resumes partial downloads, and the whole install is retried twice more (already installed
  # packages are kept, so a retry only fetches what is missing).
  pip_install() {
    local flags=(-q --retries 10)
    if .venv/bin/python -m pip install --help | grep -q -- --resume-retries; then
      flags+=(--resume-retries 20)
    fi
    local attempt
    for attempt in 1 2 3; do
      .venv/bin/python -m pip install "${flags[@]}" "$@" && return 0
      echo "setup: pip install failed (attempt $attempt of 3)" >&2
      sleep $((attempt * 10))
    done
    echo "setup: pip install $* failed 3 times; check the connection to the package index and the free disk space (pip says which), then re-run" >&2
    return 1
  }
  pip_install --upgrade pip
  pip_install -c requirements.lock -e '.[test]'
  echo "$stamp" > .venv/.sfr-stamp
fi
if [ "${1:-}" = "--test" ]; then
  # Debian's chromium and postgresql; without root they cannot be installed and the tests that
  # need them skip with the reason.
  bash scripts/install_test_deps.sh || echo "setup: warning: chromium/postgresql not installed; the browser and PostgreSQL tests will skip" >&2
fi
