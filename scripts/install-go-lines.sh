#!/usr/bin/env bash
# Builds the containerd and runc lines Debian does not carry from the Go module proxy,
# idempotently, cached by version like the Debian lines of install-containerd.sh:
#   containerd 2.2.9, 2.3.7, 2.4.2 -> ${FLOXK_CACHE:-$HOME/.cache/floxk}/containerd/<X.Y.Z>/bin/
#                                      {containerd,containerd-shim-runc-v2,ctr}
#   runc 1.4.4, 1.5.3               -> ${FLOXK_CACHE:-$HOME/.cache/floxk}/runc/<X.Y.Z>/runc
# Each runc gets a directory of its own: runc >= 1.2 re-executes itself through an overlay
# of its own directory, so runcs must never share one or be bind-mounted over each other.
#
# Builds run inside the module's own directory (`go mod download -json` gives it), with its
# own go.mod/go.sum (-mod=readonly): exactly the dependency set upstream released.
#   containerd, ctr: -tags "urfave_cli_no_docs no_btrfs"
#   containerd-shim-runc-v2: static, CGO_ENABLED=0, -tags "urfave_cli_no_docs no_btrfs no_grpc"
#   runc: CGO_ENABLED=1 -tags "seccomp urfave_cli_no_docs" against Debian's libseccomp-dev.
#     runc 1.5 builds by default with libpathrs (a Rust library Debian does not ship); built
#     without that tag it uses its pure-Go path-resolution fallback.
# Every version lands in a temp dir that is renamed into place once it reports its version.
# Go's module and build caches live under the floxk cache dir.
#
# Usage: install-go-lines.sh [--print]   (--print: list what it installs, build nothing)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The lines, newest last. Changing one here: update docs/testing.md and tests/cri/lines.py.
containerd_versions=(2.2.9 2.3.7 2.4.2)
runc_versions=(1.4.4 1.5.3)

if [[ ${1:-} == --print ]]; then
  printf 'containerd %s\n' "${containerd_versions[@]}"
  printf 'runc %s\n' "${runc_versions[@]}"
  exit 0
fi

cache="${FLOXK_CACHE:-$HOME/.cache/floxk}"
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build
# The local toolchain only; each module's own go.mod and go.sum, never rewritten.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
jobs=${FLOXK_GO_JOBS:-2}

say() { printf '[go-lines %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

containerd_ok() { # version -> 0 if the cache holds a working containerd of that version
  local bin="$cache/containerd/$1/bin"
  [[ -x "$bin/containerd" && -x "$bin/containerd-shim-runc-v2" && -x "$bin/ctr" ]] &&
    [[ " $("$bin/containerd" --version 2>/dev/null) " == *" v$1 "* ]]
}
runc_ok() { # version -> 0 if the cache holds a working runc of that version
  local bin="$cache/runc/$1/runc"
  # Whole output first: `| grep -q` under pipefail fails when runc gets SIGPIPE.
  [[ -x $bin ]] && [[ $'\n'"$("$bin" --version 2>/dev/null)"$'\n' == *$'\n'"runc version $1"$'\n'* ]]
}

todo_containerd=() todo_runc=()
for v in "${containerd_versions[@]}"; do containerd_ok "$v" || todo_containerd+=("$v"); done
for v in "${runc_versions[@]}"; do runc_ok "$v" || todo_runc+=("$v"); done
if ((${#todo_containerd[@]} + ${#todo_runc[@]} == 0)); then
  say "containerd ${containerd_versions[*]} and runc ${runc_versions[*]} already built under $cache"
  exit 0
fi

command -v go >/dev/null || die "no go toolchain on PATH (install Go >= the modules' go lines)"
apt_ensure gcc libc6-dev libseccomp-dev pkg-config

# module_dir MODULE VERSION -> the module's directory in GOMODCACHE (downloaded if needed).
module_dir() {
  local json dir
  json=$(cd / && go mod download -json "$1@$2") || die "go mod download $1@$2 failed: $json"
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  [[ -d $dir ]] || die "go mod download $1@$2 gave no module directory:"$'\n'"$json"
  echo "$dir"
}

gobuild() { # OUT TAGS PKG [LDFLAGS]  (CGO_ENABLED from the caller's env)
  nice -n 19 go build -p "$jobs" -trimpath -tags "$2" -ldflags "-s -w ${4:-}" -o "$1" "$3"
}

for v in "${todo_containerd[@]}"; do
  mod=github.com/containerd/containerd/v2
  say "containerd $v: go mod download $mod@v$v"
  dir=$(module_dir "$mod" "v$v")
  dest="$cache/containerd/$v"
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp/bin"
  ld="-X $mod/version.Version=v$v"
  tags="urfave_cli_no_docs no_btrfs"
  for b in containerd ctr; do
    say "containerd $v: go build ./cmd/$b (about a minute cold)"
    (cd "$dir" && CGO_ENABLED=1 gobuild "$dest.tmp/bin/$b" "$tags" "./cmd/$b" "$ld")
  done
  say "containerd $v: go build ./cmd/containerd-shim-runc-v2 (static)"
  (cd "$dir" && CGO_ENABLED=0 gobuild "$dest.tmp/bin/containerd-shim-runc-v2" "$tags no_grpc" \
    ./cmd/containerd-shim-runc-v2 "$ld")
  printf '%s@v%s\ntags: %s\n' "$mod" "$v" "$tags" >"$dest.tmp/go-module"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  containerd_ok "$v" || die "$dest/bin/containerd --version does not report $v: $("$dest/bin/containerd" --version 2>&1)"
  say "$("$dest/bin/containerd" --version)"
done

for v in "${todo_runc[@]}"; do
  mod=github.com/opencontainers/runc
  say "runc $v: go mod download $mod@v$v"
  dir=$(module_dir "$mod" "v$v")
  dest="$cache/runc/$v"
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  tags="seccomp urfave_cli_no_docs" # no libpathrs: runc 1.5 uses its pure-Go fallback
  say "runc $v: go build -tags \"$tags\" (cgo, libseccomp)"
  (cd "$dir" && CGO_ENABLED=1 gobuild "$dest.tmp/runc" "$tags" .)
  printf '%s@v%s\ntags: %s\n' "$mod" "$v" "$tags" >"$dest.tmp/go-module"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  runc_ok "$v" || die "$dest/runc --version does not report $v: $("$dest/runc" --version 2>&1)"
  say "$("$dest/runc" --version | tr '\n' ' ')"
done
