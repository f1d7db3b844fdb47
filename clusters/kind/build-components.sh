#!/usr/bin/env bash
# Builds what the control-plane images and the node need besides Kubernetes:
# etcd, CoreDNS and crictl from their Go modules (wrappers in
# components/<name>/<version>/, written by pin-component.sh), pause as a static C
# program from the Kubernetes module's own source.
# Prints the output directory.
source "$(dirname "$0")/lib.sh"

etcd=$(component_dir etcd "$ETCD_VERSION")
coredns=$(component_dir coredns "$COREDNS_VERSION")
crictl=$(component_dir crictl "$CRICTL_VERSION")
require_version "$etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
require_version "$coredns" github.com/coredns/coredns "$COREDNS_VERSION"
require_version "$crictl" sigs.k8s.io/cri-tools "$CRICTL_VERSION"
out=$CACHE/components-$(key "$etcd" "$coredns" "$crictl" "$K8S_VERSION" "$PAUSE_IMAGE_TAG" "$(go env GOVERSION)" "$(gcc -dumpfullversion)")

build() {
  say "go build etcd $ETCD_VERSION"
  (cd "$etcd" && gobuild "$OUT/etcd" go.etcd.io/etcd/server/v3)
  say "go build coredns $COREDNS_VERSION"
  (cd "$coredns" && gobuild "$OUT/coredns" github.com/coredns/coredns)
  say "go build crictl $CRICTL_VERSION"
  (cd "$crictl" && gobuild "$OUT/crictl" sigs.k8s.io/cri-tools/cmd/crictl \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION")
  # pause: the Kubernetes module ships its C source; build it static.
  local src
  src=$(cd "$KIND_DIR/k8s/$K8S_VERSION" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  say "cc pause $PAUSE_IMAGE_TAG (static)"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_IMAGE_TAG-floxk" -o "$OUT/pause" "$src"
  strip "$OUT/pause"
  local v
  v=$("$OUT/etcd" --version)
  [[ $v == *"etcd Version: ${ETCD_VERSION#v}"* ]] || die "etcd reports: $v"
  v=$("$OUT/coredns" -version)
  [[ $v == *"CoreDNS-${COREDNS_VERSION#v}"* ]] || die "coredns reports: $v"
}

cached "$out" build
echo "$out"
