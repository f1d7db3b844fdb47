#!/usr/bin/env bash
# Installs Docker Engine from Debian (docker.io, 20.10 on bookworm: the oldest
# Engine kind accepts) and mmdebstrap (the node image's base rootfs),
# idempotently. Only the kind node image scripts call this: the default test
# run does not need Docker. Starting and stopping the daemon: clusters/kind/dockerd.sh.
set -euo pipefail

packages=(docker.io mmdebstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
