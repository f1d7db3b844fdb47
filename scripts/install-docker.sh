#!/usr/bin/env bash
# Installs Docker Engine from Debian (docker.io, 20.10 on bookworm: the oldest
# Engine kind accepts) and mmdebstrap (the node image's base rootfs),
# idempotently. Only the kind node image scripts call this: the default test
# run does not need Docker. Starting and stopping the daemon: clusters/kind/dockerd.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

packages=(docker.io mmdebstrap)
apt_ensure "${packages[@]}"
