#!/usr/bin/env bash
# System packages the test suite needs beyond the venv (Debian), idempotent; run as root:
# - chromium, for the one Label Studio browser test (driven by Playwright with
#   executable_path=/usr/bin/chromium; never `playwright install`, which downloads browsers);
# - postgresql (server binaries in /usr/lib/postgresql/<major>/bin), for Label Studio and the
#   Dagster instance on PostgreSQL. The tests start their own cluster (annotation/postgres.py)
#   as the system user sfr-postgres; Debian's own cluster/service is not used.
set -euo pipefail

missing=()
if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
else
    missing+=(chromium)
fi
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "postgresql already installed: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
else
    missing+=(postgresql postgresql-client)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install_test_deps.sh: needs root to apt-get install ${missing[*]} (or run: sudo $0)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The package starts Debian's own cluster where a service manager runs; the tests do not use it.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_ctlcluster "$(pg_lsclusters -h | awk 'NR==1{print $1}')" main stop || true
fi
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 && echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
[ -x /usr/bin/chromium ] && /usr/bin/chromium --version || true
