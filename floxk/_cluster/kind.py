"""The kind provider: the cluster config floxk generates, and the kind CLI calls around it.

kind nodes are Docker containers named <cluster>-control-plane, <cluster>-worker[N]; the
kubeconfig context is kind-<cluster>. Every node gets the floxk node image, the flox
runtime through containerdConfigPatches, and the cluster's dev hub + node.toml through
extraMounts.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from floxk._cluster.spec import ClusterSpec
from shim.errors import CommandError
from shim.proc import run

KIND_API = "kind.x-k8s.io/v1alpha4"
FLOX_NODE_LABEL = "flox.dev/enabled"


def render_config(spec: ClusterSpec) -> dict[str, Any]:
    """kind's Cluster config for spec (a dict; config_yaml renders it)."""
    node = {
        "image": spec.node_image,
        "labels": {FLOX_NODE_LABEL: "true"},
        "extraMounts": [
            {"hostPath": m.host_path, "containerPath": m.node_path, "readOnly": m.read_only}
            for m in spec.mounts
        ],
    }
    nodes = [{"role": "control-plane", **node}]
    nodes += [{"role": "worker", **node} for _ in range(spec.workers)]
    config: dict[str, Any] = {"kind": "Cluster", "apiVersion": KIND_API, "name": spec.name}
    if spec.containerd_patch:
        config["containerdConfigPatches"] = [spec.containerd_patch]
    config["nodes"] = nodes
    return config


def config_yaml(spec: ClusterSpec) -> str:
    # Deep copy through JSON: yaml must not emit anchors for the shared node dicts.
    data = json.loads(json.dumps(render_config(spec)))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def clusters() -> list[str]:
    # kind is on PATH here (callers check); it fails when it cannot reach Docker.
    out = run(
        ["kind", "get", "clusters"],
        hint="kind lists clusters through Docker: check that the Docker Engine runs (`docker info`)",
    )
    return [line.strip() for line in out.splitlines() if line.strip()]


def exists(name: str) -> bool:
    return name in clusters()


def create(spec: ClusterSpec, config_path: str, *, wait_seconds: int | None) -> None:
    argv = ["kind", "create", "cluster", "--name", spec.name, "--config", config_path]
    if wait_seconds:
        argv += ["--wait", f"{wait_seconds}s"]
    run(argv, hint="see kind's output above; `floxk doctor` checks the tools and the host")


def delete(name: str) -> None:
    run(["kind", "delete", "cluster", "--name", name])


def node_containers(name: str) -> list[str]:
    out = run(["kind", "get", "nodes", "--name", name])
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def load_image(name: str, image: str) -> None:
    try:
        run(["kind", "load", "docker-image", image, "--name", name])
    except CommandError as e:
        e.hint = "kind load needs ctr in the node image and the image in the local Docker Engine"
        raise
