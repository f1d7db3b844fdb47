#!/usr/bin/env bash
# Writes the wrapper module that builds one version of a node-image component from the Go
# module proxy: clusters/kind/components/<name>/<version>/{go.mod,go.sum,tools.go}.
# A module's own replace lines are ignored when it is a dependency; the wrapper lets
# `go mod tidy` resolve it as one (etcd's sibling modules resolve to the same tags).
# Run once per new version, then commit the result.
# Usage: pin-component.sh etcd|coredns|crictl vX.Y.Z
FLOXK_KIND_PINNING=1 source "$(dirname "$0")/lib.sh"

name=${1:?usage: pin-component.sh etcd|coredns|crictl vX.Y.Z} v=${2:?version vX.Y.Z}
case $name in
  etcd) mod=go.etcd.io/etcd/server/v3 pkg=go.etcd.io/etcd/server/v3 ;;
  coredns) mod=github.com/coredns/coredns pkg=github.com/coredns/coredns ;;
  crictl) mod=sigs.k8s.io/cri-tools pkg=sigs.k8s.io/cri-tools/cmd/crictl ;;
  *) die "unknown component $name (etcd, coredns, crictl)" ;;
esac
[[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a release: $v (want vX.Y.Z)"
dir=$(component_dir "$name" "$v")
src=$(cd / && go mod download -json "$mod@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -f $src/go.mod ]] || die "go mod download $mod@$v gave no module"
go_line=$(awk '$1 == "go" {print $2; exit}' "$src/go.mod")

say "pinning $name $v ($mod)"
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
cat >"$dir.tmp/go.mod" <<GOMOD
// Wrapper module (written by ../../../pin-component.sh $name $v): builds $name $v from $mod.
module floxk.local/kind/$name

go $go_line

require $mod $v
GOMOD
cat >"$dir.tmp/tools.go" <<GO
//go:build tools

// Package $name only pins the command built from $mod, so that
// \`go mod tidy\` records every module it needs in go.sum.
package $name

import _ "$pkg"
GO
(cd "$dir.tmp" && go mod tidy) || die "go mod tidy for $name $v failed"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
say "wrote $dir"
