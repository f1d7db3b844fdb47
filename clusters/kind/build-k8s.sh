#!/usr/bin/env bash
# Builds the Kubernetes binaries from the k8s.io/kubernetes module (Go module
# proxy) through the wrapper module in k8s/. Prints the output directory.
# Resumable: Go's build cache keeps finished packages, and each finished
# binary stays in the .tmp dir until the whole set is done.
source "$(dirname "$0")/lib.sh"

BINARIES=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
out=$CACHE/k8s-$K8S_VERSION-$(key "$KIND_DIR/k8s/go.mod" "$KIND_DIR/k8s/go.sum" "$(go env GOVERSION)" "${BINARIES[*]}")

build() {
  local v=${K8S_VERSION#v} major minor date ldflags pkg b
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  # The release's own timestamp from the module proxy: reproducible builds.
  date=$(cd "$KIND_DIR/k8s" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Time"])' 2>/dev/null || true)
  # Unstamped binaries say v0.0.0 and the apiserver/kubeadm version checks break.
  ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=${date:-1970-01-01T00:00:00Z}"
  done
  # Keep finished binaries across interrupted runs (cached() wipes $OUT).
  local keep=$out.partial
  mkdir -p "$keep"
  for b in "${BINARIES[@]}"; do
    if [[ ! -x $keep/$b ]]; then
      say "go build $b (Kubernetes $K8S_VERSION; cold: tens of minutes on 2 cores)"
      (cd "$KIND_DIR/k8s" && gobuild "$keep/$b.new" "k8s.io/kubernetes/cmd/$b" "$ldflags")
      mv "$keep/$b.new" "$keep/$b"
    fi
    cp "$keep/$b" "$OUT/$b"
  done
  "$OUT/kubeadm" version -o short | grep -qx "$K8S_VERSION" || die "kubeadm does not report $K8S_VERSION"
  rm -rf "$keep"
}

cached "$out" build
echo "$out"
