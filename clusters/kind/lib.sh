# Shared helpers for the offline kind node image scripts (sourced, not run).
# Everything lands under $FLOXK_CACHE/kind, keyed by version + inputs.
set -euo pipefail

KIND_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$KIND_DIR/versions.env"
# (pin-*.sh set FLOXK_KIND_PINNING: they write what a new line needs.)
[[ -n ${FLOXK_KIND_PINNING:-} || " $K8S_LINES " == *" $K8S_VERSION "* ]] ||
  { echo "Kubernetes $K8S_VERSION is not a line this image builds ($K8S_LINES); to add one: clusters/kind/pin-k8s.sh $K8S_VERSION" >&2; exit 2; }
# The line's own image pins (etcd, CoreDNS, pause), as its kubeadm asks for them.
# shellcheck source=k8s/v1.37.2/images.env
[[ -n ${FLOXK_KIND_PINNING:-} ]] || source "$KIND_DIR/k8s/$K8S_VERSION/images.env"
FLOXK_CACHE=${FLOXK_CACHE:-$HOME/.cache/floxk}
CACHE=$FLOXK_CACHE/kind
mkdir -p "$CACHE"

# Go: module and build caches live in the cache dir so CI on the same machine
# reuses them; the local toolchain only (no toolchain downloads).
export GOMODCACHE=$FLOXK_CACHE/go/mod GOCACHE=$FLOXK_CACHE/go/build
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
# This machine is shared: stay polite with CPU (nice 19, two compile jobs).
GO_JOBS=${FLOXK_GO_JOBS:-2}

say() { printf '[kind-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# key INPUT... -> short sha256 over the inputs: file contents for files, every
# file's hash for source dirs, the name for cache dirs (named by their own
# key), the literal text otherwise.
key() {
  local x
  for x in "$@"; do
    if [[ -f $x ]]; then
      printf 'file %s\n' "$(basename "$x")" # not the path: caches may move
      cat "$x"
    elif [[ -d $x && $x == "$CACHE"/* ]]; then
      # Cache dirs are named by their own input keys: the name is enough.
      printf 'cached %s\n' "${x#"$CACHE"/}"
    elif [[ -d $x ]]; then
      (cd "$x" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    else
      printf 'lit %s\n' "$x"
    fi
  done | sha256sum | cut -c1-16
}

# Run a step once per key: `cached DIR cmd...` runs cmd with $OUT=DIR.tmp and
# renames it to DIR on success, so an interrupted step leaves nothing half-done.
cached() {
  local dir=$1
  shift
  if [[ -e $dir/.done ]]; then
    return 0
  fi
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  OUT=$dir.tmp "$@"
  touch "$dir.tmp/.done"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
}

# gobuild OUTFILE PKG LDFLAGS: static, trimmed, at low priority, one Go build
# at a time across scripts (a Kubernetes link needs ~2 GiB).
gobuild() {
  local out=$1 pkg=$2 ldflags=${3:-}
  CGO_ENABLED=0 flock "$CACHE/go-build.lock" nice -n 19 go build -p "$GO_JOBS" -trimpath \
    -ldflags "-s -w $ldflags" -o "$out" "$pkg"
}

# component_dir NAME VERSION -> the wrapper module building that version (pin-component.sh).
component_dir() { echo "$KIND_DIR/components/$1/$2"; }

# require_version DIR MODULE VERSION: the wrapper go.mod must pin what
# versions.env says, or the cache key would lie.
require_version() {
  [[ -f $1/go.mod ]] || die "no wrapper module $1: run clusters/kind/pin-component.sh $(basename "$(dirname "$1")") $3"
  grep -Eq "^require $2 $3\$" "$1/go.mod" ||
    die "$1/go.mod does not require $2 $3 (versions.env); run go mod tidy there after editing"
}

# The Debian archive this machine's apt already uses (never a hard-coded host):
# its main archive serves every suite, also those the host does not install from.
debian_mirror() {
  local m
  m=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' |
    awk '$2 !~ /-/ && $1 !~ /security/ {print $1; exit}')
  [[ -n $m ]] || die "no Debian archive in the host's apt sources; add one to /etc/apt/sources.list.d"
  echo "${m%/}"
}

# fetch_debs SUITE DEST PKG...: downloads PKGs from SUITE with a private apt
# state (the system's package set is not touched) and unpacks them into DEST.
fetch_debs() {
  local suite=$1 dest=$2
  shift 2
  local apt=$CACHE/apt-$suite
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$dest"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $suite main" >"$apt/sources.list"
  : >"$apt/status"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Dir::State::status=$apt/status"
    -o Acquire::Languages=none -o APT::Get::List-Cleanup=false -o APT::Sandbox::User=root)
  if [[ -z $(find "$apt/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null) ]]; then
    say "apt update ($suite, private lists)"
    apt-get "${opts[@]}" update -qq >/dev/null
  fi
  (cd "$apt/debs" && apt-get "${opts[@]}" download -qq "$@" >/dev/null)
  local p deb
  for p in "$@"; do
    deb=$(ls -t "$apt/debs/${p}"_*.deb | head -1)
    dpkg-deb -x "$deb" "$dest"
    echo "$(basename "$deb")" >>"$dest/.debs"
  done
}
