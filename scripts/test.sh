#!/usr/bin/env bash
# Installs everything the tests need (idempotent), then runs lint, the test suite
# and the CRI suite on every containerd line. Exit status: non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system.sh
source scripts/lib.sh && venv_activate
status=0
task lint || status=1
task test || status=1
task test:debian || status=1
task test:cri || status=1
exit $status
