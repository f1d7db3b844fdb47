"""The kind provider: the cluster config floxk generates, and the kind CLI calls around it.

kind nodes are Docker containers named <cluster>-control-plane, <cluster>-worker[N]; the
kubeconfig context is kind-<cluster>. Every node gets the floxk node image, the flox
runtime through containerdConfigPatches, and the cluster's dev hub + node.toml through
extraMounts; a user's own kind config (`floxk up --config`) keeps everything else.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import yaml

from floxk._cluster import nodeimage
from floxk._cluster.constants import FLOX_NODE_LABEL
from floxk._cluster.provider import Provider
from floxk._cluster.spec import ClusterSpec
from floxk._proc import call
from shim.core.errors import CommandError, ConfigError, NotFoundError

KIND_API = "kind.x-k8s.io/v1alpha4"
NODE_ROLES = ("control-plane", "worker")


def render_config(spec: ClusterSpec) -> dict[str, Any]:
    """kind's Cluster config for spec (a dict; config_yaml renders it): the user's config
    (`floxk up --config`) or one control plane and spec.workers workers, every node with
    the floxk node image, the flox label and the dev hub + node.toml mounts."""
    user = json.loads(spec.kind_config) if spec.kind_config else {}
    nodes = user.get("nodes") or [{"role": "control-plane"}]
    if not spec.kind_config:
        nodes += [{"role": "worker"} for _ in range(spec.workers)]
    ours = [
        {"hostPath": m.host_path, "containerPath": m.node_path, "readOnly": m.read_only}
        for m in spec.mounts
    ]
    config: dict[str, Any] = {
        **user,
        "kind": "Cluster",
        "apiVersion": KIND_API,
        "name": spec.name,
    }
    patches = list(user.get("containerdConfigPatches") or [])
    if spec.containerd_patch:
        patches.append(spec.containerd_patch)
    if patches:
        config["containerdConfigPatches"] = patches
    config["nodes"] = [
        {
            **node,
            "image": spec.node_image,
            "labels": {**(node.get("labels") or {}), FLOX_NODE_LABEL: "true"},
            "extraMounts": list(node.get("extraMounts") or []) + ours,
        }
        for node in nodes
    ]
    return config


def load_user_config(path: str | Path, *, name: str | None) -> dict[str, Any]:
    """The user's kind Cluster config, checked: kind's own shape, and nothing that
    conflicts with what floxk sets on every node (each conflict named). Relative
    extraMounts hostPaths are made absolute against the config file's directory."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise NotFoundError(f"kind config {path} does not exist") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"kind config {path}: not valid YAML: {e}") from e
    if not isinstance(data, dict) or data.get("kind") != "Cluster":
        raise ConfigError(
            f"kind config {path}: not a kind Cluster config (kind: Cluster)",
            hint=f"start it with `kind: Cluster` and `apiVersion: {KIND_API}`",
        )
    if data.get("apiVersion") != KIND_API:
        raise ConfigError(
            f"kind config {path}: apiVersion {data.get('apiVersion')!r} is not {KIND_API}",
            hint=f"floxk writes kind configs of {KIND_API}",
        )
    nodes = data.get("nodes") or []
    if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
        raise ConfigError(f"kind config {path}: nodes must be a list of mappings")
    roles = [n.get("role", "control-plane") for n in nodes]
    bad = [f"nodes[{i}].role {r!r}" for i, r in enumerate(roles) if r not in NODE_ROLES]
    if bad:
        raise ConfigError(
            f"kind config {path}: {', '.join(bad)}", hint="roles are control-plane and worker"
        )
    if nodes and "control-plane" not in roles:
        raise ConfigError(f"kind config {path}: no control-plane node")
    conflicts = config_conflicts(data, name=name)
    if conflicts:
        raise ConfigError(
            f"kind config {path} conflicts with what floxk sets: " + "; ".join(conflicts),
            hint="drop these settings: floxk sets them on every node (docs/clusters.md, "
            "`floxk up --config`)",
        )
    for node in nodes:
        for m in node.get("extraMounts") or []:
            host = m.get("hostPath")
            if isinstance(host, str) and host and not os.path.isabs(host):
                m["hostPath"] = str((path.parent / host).resolve())
    return data


def config_conflicts(data: dict[str, Any], *, name: str | None) -> list[str]:
    """Each setting of a user's kind config that floxk sets itself, named."""
    out = []
    if name and data.get("name") and data["name"] != name:
        out.append(f"name {data['name']!r} (--name {name})")
    floxk_paths = (nodeimage.HUB_DIR, nodeimage.NODE_TOML)
    for i, node in enumerate(data.get("nodes") or []):
        if "image" in node:
            out.append(
                f"nodes[{i}].image (floxk's node image runs the flox runtime; "
                "--base-image picks the kind image it is built from)"
            )
        labels = node.get("labels") or {}
        if FLOX_NODE_LABEL in labels and str(labels[FLOX_NODE_LABEL]) != "true":
            out.append(f"nodes[{i}].labels.{FLOX_NODE_LABEL} (floxk sets it to true)")
        for j, m in enumerate(node.get("extraMounts") or []):
            target = str((m or {}).get("containerPath") or "").rstrip("/") or "/"
            for ours in floxk_paths:
                if ours == target or ours.startswith(target + "/") or target.startswith(ours + "/"):
                    out.append(
                        f"nodes[{i}].extraMounts[{j}].containerPath {target} "
                        f"(floxk mounts {ours} there)"
                    )
                    break
    for k, patch in enumerate(data.get("containerdConfigPatches") or []):
        try:
            table = tomllib.loads(patch) if isinstance(patch, str) else {}
        except tomllib.TOMLDecodeError as e:
            out.append(f"containerdConfigPatches[{k}] is not TOML ({e})")
            continue
        if _names_flox_runtime(table):
            out.append(f"containerdConfigPatches[{k}] (configures the flox runtime)")
    return out


def _names_flox_runtime(table: Any) -> bool:
    if not isinstance(table, dict):
        return False
    runtimes = table.get("runtimes")
    if isinstance(runtimes, dict) and "flox" in runtimes:
        return True
    return any(_names_flox_runtime(v) for v in table.values())


def node_counts(data: dict[str, Any]) -> tuple[int, int]:
    """(control planes, workers) of a kind config (one control plane when nodes is empty)."""
    roles = [n.get("role", "control-plane") for n in data.get("nodes") or []] or ["control-plane"]
    return roles.count("control-plane"), roles.count("worker")


def canonical(data: dict[str, Any]) -> str:
    """The config as canonical JSON: what ClusterSpec.kind_config holds and hashes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def config_yaml(spec: ClusterSpec) -> str:
    # Deep copy through JSON: yaml must not emit anchors for the shared node dicts.
    data = json.loads(json.dumps(render_config(spec)))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


class Kind(Provider):
    """Clusters made by the kind CLI (kind is on PATH here: callers check)."""

    name = "kind"

    def check_create(self) -> None:
        pass

    def node_count(self, spec: ClusterSpec) -> int:
        return len(render_config(spec)["nodes"])

    def create(self, spec: ClusterSpec, config_dir: Path, *, wait_seconds: int | None) -> None:
        config_path = config_dir / "kind.yaml"
        config_path.write_text(config_yaml(spec))
        argv = ["kind", "create", "cluster", "--name", spec.name, "--config", str(config_path)]
        if wait_seconds:
            argv += ["--wait", f"{wait_seconds}s"]
        call(argv, hint="see kind's output above; `floxk doctor` checks the tools and the host")

    def delete(self, name: str) -> None:
        call(["kind", "delete", "cluster", "--name", name])

    def clusters(self) -> list[str]:
        # kind fails when it cannot reach Docker.
        out = call(
            ["kind", "get", "clusters"],
            hint="kind lists clusters through Docker: check that the Docker Engine runs "
            "(`docker info`)",
        ).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def node_containers(self, name: str) -> list[str]:
        out = call(["kind", "get", "nodes", "--name", name]).stdout
        return sorted(line.strip() for line in out.splitlines() if line.strip())

    def load_image(self, name: str, image: str) -> None:
        try:
            call(["kind", "load", "docker-image", image, "--name", name])
        except CommandError as e:
            e.hint = (
                "kind load needs ctr in the node image and the image in the local Docker Engine"
            )
            raise

    def kubeconfig(self, name: str) -> str:
        return call(["kind", "get", "kubeconfig", "--name", name]).stdout


PROVIDER = Kind()
