#!/usr/bin/env bash
# Writes the wrapper module that builds one Kubernetes release from the k8s.io/kubernetes
# module on the Go module proxy: clusters/kind/k8s/<VERSION>/{go.mod,go.sum} and tools.go,
# a link to the one clusters/kind/k8s/tools.go that names the commands.
# k8s.io/kubernetes requires its staging modules at v0.0.0 and its own replace lines (to
# ./staging) are ignored as a dependency, so the wrapper pins each staging module it names
# to the published v0.<minor>.<patch> tag. Run once per new line, fill in its images.env,
# add it to K8S_LINES in versions.env, then commit the result.
# Usage: pin-k8s.sh vX.Y.Z
FLOXK_KIND_PINNING=1 source "$(dirname "$0")/lib.sh"

v=${1:?usage: pin-k8s.sh vX.Y.Z}
[[ $v =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "not a Kubernetes release: $v (want vX.Y.Z)"
staging=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
dir=$KIND_DIR/k8s/$v
src=$(cd / && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -f $src/go.mod ]] || die "go mod download k8s.io/kubernetes@$v gave no module"
go_line=$(awk '$1 == "go" {print $2; exit}' "$src/go.mod")
godebug=$(awk '$1 == "godebug" {print; exit}' "$src/go.mod")
mods=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$src/go.mod")
[[ -n $mods ]] || die "k8s.io/kubernetes@$v names no staging modules"

say "pinning Kubernetes $v: $(wc -w <<<"$mods") staging modules at $staging"
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
{
  echo "// Wrapper module (written by ../../pin-k8s.sh $v): builds Kubernetes $v from the"
  echo "// k8s.io/kubernetes module, its staging modules pinned to their published $staging tags."
  echo "module floxk.local/kind/k8s"
  echo
  echo "go $go_line"
  [[ -n $godebug ]] && echo && echo "$godebug"
  echo
  echo "require k8s.io/kubernetes $v"
  echo
  echo "replace ("
  for m in $mods; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
  echo ")"
} >"$dir.tmp/go.mod"
# The commands to pin are the same for every line: one tools.go beside the lines, linked.
ln -s ../tools.go "$dir.tmp/tools.go"
(cd "$dir.tmp" && go mod tidy) || die "go mod tidy for Kubernetes $v failed"
if [[ -f $dir/images.env ]]; then
  cp "$dir/images.env" "$dir.tmp/"
else
  cat >"$dir.tmp/images.env" <<ENV
# Images kubeadm $v deploys (\`kubeadm config images list\`; the build fails
# when they differ) and the modules they are built from. FILL IN from that list,
# then pin the versions: pin-component.sh etcd|coredns vX.Y.Z.
ETCD_VERSION=
ETCD_IMAGE_TAG=
COREDNS_VERSION=
PAUSE_IMAGE_TAG=
ENV
  say "now fill in $dir/images.env"
fi
rm -rf "$dir"
mv "$dir.tmp" "$dir"
say "wrote $dir"
