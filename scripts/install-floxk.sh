#!/usr/bin/env bash
# Installs floxk into the checkout's own virtual environment, .venv (FLOXK_VENV to move
# it), idempotently: never into the system interpreter (Debian's python3 refuses pip there,
# PEP 668). Needs python3 >= 3.11 with venv (Debian: python3-venv, installed when missing).
#   bash scripts/install-floxk.sh           floxk alone: .venv/bin/floxk
#   bash scripts/install-floxk.sh --test    with the test extras (scripts/install-system.sh)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
extras=
case "${1:-}" in
  --test) extras="[test]" ;;
  "") ;;
  *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac
venv_ensure "$PWD" "$extras"
echo "floxk installed: $VENV_DIR/bin/floxk ($("$VENV_DIR/bin/floxk" --version))" >&2
