"""Talking to a cluster through the kubernetes client: apply, labels, recorded spec, waits.

Everything floxk creates is server-side applied with field manager "floxk", so a second
`floxk up` re-applies the same objects without conflicts and changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from shim.errors import FloxkError, NotFoundError

FIELD_MANAGER = "floxk"
RUNTIME_CLASS = "flox"
FLOX_NODE_LABEL = "flox.dev/enabled"
STATE_NAMESPACE = "kube-system"
STATE_CONFIGMAP = "floxk-cluster"


class WaitTimeout(FloxkError):
    """Waiting for the cluster took longer than allowed."""

    exit_code = 5


def api_client(context: str):
    """A kubernetes ApiClient for a kubeconfig context (KUBECONFIG or ~/.kube/config)."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        return config.new_client_from_config(context=context)
    except (ConfigException, FileNotFoundError) as e:
        raise NotFoundError(
            f"no kubeconfig context {context!r}: {e}",
            hint="create the cluster with `floxk up` (or pass --name of an existing one)",
        ) from e


def current_context() -> str | None:
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        _, active = config.list_kube_config_contexts()
    except (ConfigException, FileNotFoundError):
        return None
    return active["name"] if active else None


def apply(api, body: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply one object; returns the object as the server has it."""
    from kubernetes.dynamic import DynamicClient

    client = DynamicClient(api)
    resource = client.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    result = client.server_side_apply(
        resource,
        body=body,
        namespace=body["metadata"].get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )
    return result.to_dict()


def runtime_class() -> dict[str, Any]:
    """RuntimeClass flox (handler flox), scheduling pods onto nodes labelled for it."""
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": RUNTIME_CLASS},
        "handler": RUNTIME_CLASS,
        "scheduling": {"nodeSelector": {FLOX_NODE_LABEL: "true"}},
    }


def label_nodes(api, names: list[str] | None = None) -> list[str]:
    """Label nodes (default: all) flox.dev/enabled=true; returns their names."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    nodes = [n.metadata.name for n in core.list_node().items]
    targets = [n for n in nodes if names is None or n in names]
    for name in targets:
        core.patch_node(name, {"metadata": {"labels": {FLOX_NODE_LABEL: "true"}}})
    return targets


def spec_configmap(spec_dict: dict[str, Any], digest: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": STATE_CONFIGMAP,
            "namespace": STATE_NAMESPACE,
            "annotations": {"floxk.dev/spec-digest": digest},
        },
        "data": {"spec.json": json.dumps(spec_dict, indent=2, sort_keys=True)},
    }


def recorded_spec_digest(api) -> str | None:
    """The spec digest `floxk up` recorded in this cluster, or None (not a floxk cluster)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map(STATE_CONFIGMAP, STATE_NAMESPACE)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return (cm.metadata.annotations or {}).get("floxk.dev/spec-digest")


def node_summaries(api) -> list[dict[str, Any]]:
    from kubernetes import client

    out = []
    for n in client.CoreV1Api(api).list_node().items:
        ready = next((c.status for c in n.status.conditions or [] if c.type == "Ready"), "Unknown")
        out.append(
            {
                "name": n.metadata.name,
                "ready": ready == "True",
                "flox_label": (n.metadata.labels or {}).get(FLOX_NODE_LABEL) == "true",
                "kubelet": n.status.node_info.kubelet_version,
                "container_runtime": n.status.node_info.container_runtime_version,
            }
        )
    return out


def has_runtime_class(api) -> bool:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        rc = client.NodeV1Api(api).read_runtime_class(RUNTIME_CLASS)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return rc.handler == RUNTIME_CLASS


def wait_schedulable(api, *, timeout: float, progress: Callable[[str], None] | None = None) -> None:
    """Until a flox pod can be scheduled: every node Ready and labelled, RuntimeClass flox
    present, the default ServiceAccount created (pods are refused before it exists)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    say = progress or (lambda _m: None)
    deadline = time.monotonic() + timeout
    core = client.CoreV1Api(api)
    last = ""
    while True:
        nodes = node_summaries(api)
        waiting = [n["name"] for n in nodes if not (n["ready"] and n["flox_label"])]
        problems = []
        if not nodes or waiting:
            problems.append(f"nodes not Ready: {', '.join(waiting) or 'none registered'}")
        if not has_runtime_class(api):
            problems.append("RuntimeClass flox missing")
        try:
            core.read_namespaced_service_account("default", "default")
        except ApiException:
            problems.append("default ServiceAccount not created yet")
        if not problems:
            return
        if problems[0] != last:
            say("waiting: " + "; ".join(problems))
            last = problems[0]
        if time.monotonic() > deadline:
            raise WaitTimeout(
                f"cluster not ready for flox pods after {timeout:.0f} s: {'; '.join(problems)}",
                hint="raise --timeout, or look at `kubectl get nodes` and `floxk doctor`",
            )
        time.sleep(2)
