#!/usr/bin/env bash
# `task kind:smoke`: one-node kind cluster from the offline node image; waits
# for the node Ready and CoreDNS running, prints the nodes, deletes the
# cluster. FLOXK_KIND_KEEP=1 keeps a failed cluster for inspection.
source "$(dirname "$0")/lib.sh"

NAME=${FLOXK_KIND_SMOKE_NAME:-floxk-smoke}
start=$SECONDS
bash "$KIND_DIR/dockerd.sh" start
kind=$("$KIND_DIR/install-kind.sh")
k8s=$("$KIND_DIR/build-k8s.sh")
TAG=$IMAGE_REPO:$K8S_VERSION
docker image inspect "$TAG" >/dev/null 2>&1 || die "$TAG is missing: run task kind:image first"

kubeconfig=$(mktemp)
kubectl() { "$k8s/kubectl" --kubeconfig "$kubeconfig" "$@"; }
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    say "smoke failed; node state follows"
    kubectl get pods -A -o wide >&2 || true
    docker exec "$NAME-control-plane" journalctl -u kubelet -n 30 --no-pager >&2 || true
  fi
  if ((rc != 0)) && [[ ${FLOXK_KIND_KEEP:-} == 1 ]]; then
    say "keeping cluster $NAME (kind delete cluster --name $NAME)"
  else
    "$kind" delete cluster --name "$NAME" >/dev/null 2>&1 || true
  fi
  rm -f "$kubeconfig"
}
trap cleanup EXIT

"$kind" delete cluster --name "$NAME" >/dev/null 2>&1 || true
say "kind create cluster --name $NAME --image $TAG"
"$kind" create cluster --name "$NAME" --image "$TAG" --kubeconfig "$kubeconfig" --wait 180s
say "waiting for the node Ready and CoreDNS running"
kubectl wait --for=condition=Ready node --all --timeout=180s >&2
kubectl -n kube-system rollout status deployment/coredns --timeout=180s >&2
kubectl get nodes -o wide
kubectl -n kube-system get pods -o wide >&2
say "smoke passed in $((SECONDS - start)) s"
