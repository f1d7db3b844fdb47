#!/usr/bin/env bash
# Installs the host pieces floxk's tests need, idempotently:
# Debian nix-bin (offline Nix), busybox-static (builder for test packages),
# runc, util-linux (unshare), and the Python distribution with its test extras.
# Containerd lines for the CRI suite come from scripts/install-containerd.sh (Debian's) and
# scripts/install-go-lines.sh (containerd 2.2-2.4 and runc 1.4/1.5 from the Go module proxy).
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

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# containerd 1.6 / 1.7 / 2.1 from Debian, 2.2 / 2.3 / 2.4 and runc 1.4 / 1.5 built from
# their Go modules, for the CRI suite (task test:cri) and the kind node image.
bash scripts/install-containerd.sh
bash scripts/install-go-lines.sh
