#!/usr/bin/env bash
# Installs the three containerd lines the CRI suite drives (tests/cri), idempotently:
#   bookworm 1.6.20, trixie 1.7.24, sid 2.1.9
# into ${FLOXK_CACHE:-$HOME/.cache/floxk}/containerd/<X.Y.Z>/bin/{containerd,containerd-shim-runc-v2,ctr}.
#
# The .debs come from Debian through a PRIVATE apt configuration (own sources list, own
# package lists, own download cache) so the system's sources and packages stay untouched:
# nothing here installs trixie or sid packages, it only unpacks them with dpkg-deb -x.
# The mirror is the one the system already uses (its debian.sources), never a name of ours.
# runc 1.1.5 is the host's (Debian runc, installed by scripts/install-system.sh); newer
# containerd and runc lines come from scripts/install-go-lines.sh.
# Also installs gcc + libc6-dev: the suite compiles a static pause binary for its pause image.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Exact Debian versions, one per line we test. If Debian drops one, this fails loudly:
# update the pin here (and docs/testing.md) after checking the new version works.
pins=(
  "1.6.20 bookworm 1.6.20~ds1-1+deb12u3"
  "1.7.24 trixie 1.7.24~ds1-6+deb13u1"
  "2.1.9 sid 2.1.9+ds1-5"
)

cache="${FLOXK_CACHE:-$HOME/.cache/floxk}/containerd"
mkdir -p "$cache"

# Build tools for the pause image (static binary).
apt_ensure gcc libc6-dev

installed() { # version -> 0 if cache/<version>/bin holds a working containerd of that version
  local bin="$cache/$1/bin"
  [[ -x "$bin/containerd" && -x "$bin/containerd-shim-runc-v2" && -x "$bin/ctr" ]] &&
    "$bin/containerd" --version 2>/dev/null | grep -q " $1"
}

todo=()
for pin in "${pins[@]}"; do
  read -r version _suite _debver <<<"$pin"
  installed "$version" || todo+=("$pin")
done
if ((${#todo[@]} == 0)); then
  echo "containerd lines already installed under $cache" >&2
  exit 0
fi

# The mirror the system already uses, from its deb822 sources (or a one-line sources.list).
mirror=""
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
  mirror=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z "$mirror" && -r /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list)
fi
if [[ -z "$mirror" ]]; then
  echo "install-containerd: cannot find the Debian mirror in the system's apt sources" >&2
  exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
{
  for pin in "${pins[@]}"; do
    read -r _version suite _debver <<<"$pin"
    echo "deb [signed-by=$keyring] $mirror $suite main"
  done
} >"$apt_dir/sources.list"
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir"
  -o "Dir::Cache::archives=$apt_dir/archives"
  -o "APT::Get::List-Cleanup=0"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "APT::Sandbox::User=root"
)
echo "install-containerd: updating private package lists" >&2
apt-get -qq "${apt_opts[@]}" update

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for pin in "${todo[@]}"; do
  read -r version suite debver <<<"$pin"
  if ! apt-cache "${apt_opts[@]}" madison containerd | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
    grep -qxF "$debver"; then
    echo "install-containerd: containerd $debver ($suite) is no longer in Debian;" \
      "available: $(apt-cache "${apt_opts[@]}" madison containerd | awk -F'|' '{gsub(/ /,"",$2); printf "%s ", $2}')" >&2
    exit 1
  fi
  echo "install-containerd: containerd $debver ($suite)" >&2
  (cd "$work" && apt-get -qq "${apt_opts[@]}" download "containerd=$debver")
  deb=$(ls "$work"/containerd_*.deb)
  mkdir -p "$work/x"
  dpkg-deb -x "$deb" "$work/x"
  dest="$cache/$version"
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp/bin"
  for b in containerd containerd-shim-runc-v2 ctr; do
    install -m 0755 "$work/x/usr/bin/$b" "$dest.tmp/bin/$b"
  done
  echo "$debver" >"$dest.tmp/debian-version"
  rm -rf "$dest" "$work/x" "$deb"
  mv "$dest.tmp" "$dest"
  if ! installed "$version"; then
    echo "install-containerd: $dest/bin/containerd --version does not report $version:" >&2
    "$dest/bin/containerd" --version >&2 || true
    exit 1
  fi
  "$dest/bin/containerd" --version >&2
done
