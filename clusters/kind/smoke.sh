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
kubectl -n kube-system get pods -o wide >&2
# A pod on the pod network resolves a cluster name (CNI bridge, kube-proxy's
# ClusterIP rules, CoreDNS) and the node's own name (CoreDNS forwarding to
# Docker's DNS through the node entrypoint's rules). Retries: right after
# CoreDNS turns ready, kube-proxy may not have synced its Service rules yet.
say "DNS check from a pod"
kubectl run dnscheck --restart=Never --image="floxk.local/kind-cni:$K8S_VERSION" \
  --image-pull-policy=Never --command -- sh -c '
    for i in $(seq 30); do
      getent hosts kubernetes.default.svc.cluster.local "$0" && exit 0
      sleep 2
    done
    exit 1' "$NAME-control-plane" >&2
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/dnscheck --timeout=120s >&2 ||
  { kubectl logs dnscheck >&2; die "a pod could not resolve names"; }
kubectl logs dnscheck >&2
kubectl get nodes -o wide
say "smoke passed in $((SECONDS - start)) s"
