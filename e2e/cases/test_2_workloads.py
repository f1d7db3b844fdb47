"""Workloads: Deployments and Services on environments, across the cluster's nodes."""

from __future__ import annotations

import time
import tomllib

import pytest

from e2e import kit
from e2e.cases.conftest import fresh

# kind and kubeadm taint a control plane that has workers; the suite's pods may go there
# too, so a two-node cluster has two nodes to spread over.
CONTROL_PLANE_TOLERATION = {
    "key": "node-role.kubernetes.io/control-plane",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def flox_template(env: str, labels: dict[str, str], container: dict) -> dict:
    """A Deployment's pod template, filled in like `floxk run pod` fills a pod."""
    pod = kit.flox_pod("template", env, containers=[container], restart="Always")
    pod["spec"]["tolerations"] = [CONTROL_PLANE_TOLERATION]
    return {
        "metadata": {"labels": labels, "annotations": pod["metadata"]["annotations"]},
        "spec": pod["spec"],
    }


def deployment(name: str, replicas: int, template: dict, **spec) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": template["metadata"]["labels"]},
            "template": template,
            **spec,
        },
    }


def wait_available(cluster, name: str, replicas: int, timeout: float = 300) -> list[kit.Outcome]:
    """Until the Deployment has `replicas` ready pods, or one of its pods cannot start;
    returns the outcomes of its pods either way."""
    selector = f"app={name}"
    deadline = time.monotonic() + timeout
    while True:
        dep = cluster.apps.read_namespaced_deployment(name, cluster.namespace)
        items = cluster.core.list_namespaced_pod(cluster.namespace, label_selector=selector).items
        broken = [p for p in items if kit.pods.pod_state(p).failed] or [
            p for p in items if kit.sandbox_keeps_failing(cluster, p.metadata.name)
        ]
        if (dep.status.available_replicas or 0) >= replicas or broken:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    return [kit.outcome(cluster, p.metadata.name) for p in items]


def schedulable_flox_nodes(cluster) -> list[str]:
    nodes = cluster.core.list_node(label_selector="flox.dev/enabled=true").items
    return [n.metadata.name for n in nodes if not n.spec.unschedulable]


def test_deployment_one_realization_per_node(cluster, publish):
    """A Deployment of N replicas with one environment becomes Ready, realized once per node."""
    env = publish("e2e/replicas", fresh(cluster, {"hello": "hello", "busybox": "busybox"}))
    nodes = schedulable_flox_nodes(cluster)
    replicas = max(3, 2 * len(nodes))
    template = flox_template(
        env.ref,
        {"app": "e2e-replicas"},
        {
            "name": "main",
            "command": ["sleep", "3600"],
            # An exec probe through the absolute path: the tree is mounted, nothing more.
            "readinessProbe": {
                "exec": {"command": ["/run/floxk/env/bin/hello"]},
                "periodSeconds": 2,
            },
        },
    )
    template["spec"]["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "e2e-replicas"}},
        }
    ]
    cluster.apply(deployment("e2e-replicas", replicas, template))
    outcomes = wait_available(cluster, "e2e-replicas", replicas)
    not_ready = [o for o in outcomes if not kit.ready(o.state)]
    assert len(outcomes) == replicas and not not_ready, (
        f"{len(outcomes) - len(not_ready)}/{replicas} ready; "
        + (not_ready[0].why() if not_ready else "")
    )
    used = sorted({o.node for o in outcomes})
    counts = {}
    for node_name in used:
        node = cluster.node(node_name)
        if node is None:
            pytest.skip(f"Ready on {used}; counting realizations needs node access (kind, k3d)")
        state_dir = _state_dir(node)
        log = node.read(f"{state_dir}/realize.log")
        counts[node_name] = sum(
            1 for line in log.splitlines() if line.split()[2:4] == ["tree", env.digest]
        )
    assert counts == {n: 1 for n in used}, f"environment trees built per node: {counts}"


def _state_dir(node: kit.Node) -> str:
    text = node.read("/etc/floxk/node.toml")
    return tomllib.loads(text).get("state_dir", "/var/lib/floxk") if text else "/var/lib/floxk"


def test_service_reaches_http_server_in_environment(cluster, web_env, basic_env):
    """A Service reaches an HTTP server that lives in the environment."""
    labels = {"app": "e2e-web"}
    server = kit.flox_pod("e2e-web", web_env.ref, ["web-serve"], restart="Always")
    server["metadata"]["labels"] = labels
    server["spec"]["tolerations"] = [CONTROL_PLANE_TOLERATION]
    server["spec"]["containers"][0]["readinessProbe"] = {
        "tcpSocket": {"port": 8080},
        "periodSeconds": 1,
    }
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "e2e-web"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )
    o = kit.start_pod(cluster, server)
    assert kit.ready(o.state), o.why()
    # The client is a flox pod too, speaking HTTP with busybox's nc from its environment
    # (a static glibc wget crashes resolving in a container without NSS libraries). It
    # reaches the Service by its ClusterIP (kubelet's E2E_WEB_SERVICE_* variables), so
    # kube-proxy routes it to the server's pod.
    fetch = (
        "for i in $(seq 30); do "
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' "
        '| nc -w 3 "$E2E_WEB_SERVICE_HOST" "$E2E_WEB_SERVICE_PORT" | grep "hello from" && exit 0; '
        "sleep 2; done; exit 1"
    )
    client = kit.flox_pod("e2e-web-client", basic_env.ref, ["sh", "-c", fetch])
    client["spec"]["tolerations"] = [CONTROL_PLANE_TOLERATION]
    c = kit.run_pod(cluster, client)
    assert c.state.phase == "Succeeded", c.why()
    assert "hello from floxk web" in c.log, c.why()
