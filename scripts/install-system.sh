#!/usr/bin/env bash
# Installs the host pieces floxk's tests need, idempotently:
# Debian nix-bin (offline Nix), busybox-static (builder for test packages),
# runc, util-linux (unshare), nginx (a private hub enforcing a token, run by the tests
# as their own process), and floxk with its test extras in the checkout's own virtual
# environment (.venv; scripts/lib.sh). Containerd lines for the CRI suite come from
# scripts/install-containerd.sh (Debian's) and scripts/install-go-lines.sh (containerd
# 2.2-2.4 and runc 1.4/1.5 from the Go module proxy). Every change to the system is said
# before it is made; what is already there is left as it is.
#   bash scripts/install-system.sh [--dry-run]   --dry-run: say what would change, change nothing
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
case "${1:-}" in
  --dry-run) export FLOXK_DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

packages=(nix-bin busybox-static runc util-linux ca-certificates nginx)
apt_ensure "${packages[@]}"

# Nix as root without a daemon: the tests use the local store directly and
# chroot stores under temp dirs (lib.sh's nix_conf_ensure: nix-command and flakes, added).
nix_conf_ensure

venv_ensure "$PWD" "[test]"

# helm (chart lint/template, the Helm tests) and the distribution registry, built from
# their Go modules into the floxk cache; /usr/local/bin/helm linked when none is on PATH.
if dry_run; then
  echo "would build helm and the distribution registry into the floxk cache and link /usr/local/bin/helm when no helm is on PATH (clusters/helm/build-tools.sh)" >&2
else
  bash clusters/helm/build-tools.sh >/dev/null
fi

# containerd 1.6 / 1.7 / 2.1 from Debian, 2.2 / 2.3 / 2.4 and runc 1.4 / 1.5 built from
# their Go modules, for the CRI suite (task test:cri) and the kind node image: into the
# floxk cache only.
if dry_run; then
  apt_ensure gcc libc6-dev libseccomp-dev pkg-config
  echo "would fetch and build the containerd and runc lines of the CRI suite into the floxk cache (scripts/install-containerd.sh, scripts/install-go-lines.sh; no other system change)" >&2
  exit 0
fi
bash scripts/install-containerd.sh
bash scripts/install-go-lines.sh
