#!/usr/bin/env bash
# Installs the host pieces floxk's tests need, idempotently:
# Debian nix-bin (offline Nix), busybox-static (builder for test packages),
# runc, util-linux (unshare), and the Python distribution with its test extras.
# Containerd lines for the CRI suite come from scripts/install-containerd.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

packages=(nix-bin busybox-static runc util-linux ca-certificates)
apt_ensure "${packages[@]}"

# Nix as root without a daemon: the tests use the local store directly and
# chroot stores under temp dirs. Enable the commands we use.
mkdir -p /etc/nix
if ! grep -qs '^experimental-features' /etc/nix/nix.conf; then
  echo 'experimental-features = nix-command flakes' >>/etc/nix/nix.conf
fi

# helm (chart lint/template, the Helm tests) and the distribution registry, built from
# their Go modules and cached by version.
bash clusters/helm/build-tools.sh >/dev/null

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# containerd 1.6 / 1.7 / 2.x for the CRI suite (task test:cri).
bash scripts/install-containerd.sh
