#!/usr/bin/env bash
# Builds helm (helm.sh/helm/v4) and the CNCF distribution registry from the Go module
# proxy (wrapper modules in tools/), cached by version under $FLOXK_CACHE/kind like the
# kind node image's components, with the same helpers (clusters/kind/lib.sh). Links
# /usr/local/bin/helm when no helm is on PATH. Prints the output directory (helm,
# registry). A second run is a no-op.
source "$(dirname "$0")/../kind/lib.sh"
HELM_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$HELM_DIR/versions.env"

T=$HELM_DIR/tools
require_version "$T/helm" helm.sh/helm/v4 "$HELM_VERSION"
require_version "$T/registry" github.com/distribution/distribution/v3 "$REGISTRY_VERSION"
out=$CACHE/helm-tools-$HELM_VERSION-$(key "$T" "$REGISTRY_VERSION" "$(go env GOVERSION)")

build() {
  say "go build helm $HELM_VERSION"
  (cd "$T/helm" && gobuild "$OUT/helm" helm.sh/helm/v4/cmd/helm \
    "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.metadata=")
  say "go build registry $REGISTRY_VERSION"
  (cd "$T/registry" && gobuild "$OUT/registry" github.com/distribution/distribution/v3/cmd/registry \
    "-X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION")
  local v
  v=$("$OUT/helm" version --short)
  [[ $v == "$HELM_VERSION"* ]] || die "helm reports: $v"
  v=$("$OUT/registry" --version)
  [[ $v == *"$REGISTRY_VERSION"* ]] || die "registry reports: $v"
}

cached "$out" build
if ! command -v helm >/dev/null; then
  ln -sf "$out/helm" /usr/local/bin/helm
  say "linked /usr/local/bin/helm -> $("$out/helm" version --short)"
fi
echo "$out"
