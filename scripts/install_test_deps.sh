#!/usr/bin/env bash
# System packages the test suite needs beyond the venv: Debian's chromium for the one
# Label Studio browser test (driven by Playwright with executable_path=/usr/bin/chromium;
# never `playwright install`, which downloads browsers). Idempotent; run as root.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_test_deps.sh: needs root to apt-get install chromium (or run: sudo $0)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium
/usr/bin/chromium --version
