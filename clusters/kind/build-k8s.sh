#!/usr/bin/env bash
# Builds the Kubernetes binaries from the k8s.io/kubernetes module (Go module
# proxy) through the wrapper module k8s/$K8S_VERSION/ (written by pin-k8s.sh). Prints the
# output directory.
# Resumable: Go's build cache keeps finished packages, and each finished
# binary stays in the .tmp dir until the whole set is done.
source "$(dirname "$0")/lib.sh"

BINARIES=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)

# Unstamped binaries say v0.0.0 and the apiserver/kubeadm version checks
# break. The build date is the release's own time on the module proxy, so
# builds are reproducible.
version_ldflags() {
  local v=${K8S_VERSION#v} major minor date pkg
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  date=$(cd "$MOD" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "k8s.io/kubernetes@$K8S_VERSION")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf ' -X %s' "$pkg.gitVersion=$K8S_VERSION" "$pkg.gitMajor=$major" "$pkg.gitMinor=$minor" \
      "$pkg.gitTreeState=archive" "$pkg.buildDate=$date"
  done
}
MOD=$KIND_DIR/k8s/$K8S_VERSION
[[ -f $MOD/go.mod ]] || die "no wrapper module for Kubernetes $K8S_VERSION: run clusters/kind/pin-k8s.sh $K8S_VERSION"
ldflags=$(version_ldflags)
out=$CACHE/k8s-$K8S_VERSION-$(key "$MOD/go.mod" "$MOD/go.sum" "$(go env GOVERSION)" "${BINARIES[*]}" "$ldflags")

build() {
  local b
  # Keep finished binaries across interrupted runs (cached() wipes $OUT).
  local keep=$out.partial
  mkdir -p "$keep"
  for b in "${BINARIES[@]}"; do
    if [[ ! -x $keep/$b ]]; then
      say "go build $b (Kubernetes $K8S_VERSION; cold: tens of minutes on 2 cores)"
      (cd "$MOD" && gobuild "$keep/$b.new" "k8s.io/kubernetes/cmd/$b" "$ldflags")
      mv "$keep/$b.new" "$keep/$b"
    fi
    cp "$keep/$b" "$OUT/$b"
  done
  local v
  v=$("$OUT/kubeadm" version -o short)
  [[ $v == "$K8S_VERSION" ]] || die "kubeadm reports $v, not $K8S_VERSION"
  rm -rf "$keep"
}

cached "$out" build
echo "$out"
