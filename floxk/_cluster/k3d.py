"""The k3d provider (k3s in Docker): generated artifacts and the k3d CLI calls.

UNTESTED against a real k3s here: no k3s image can be pulled and k3s is not built on this
machine, so only the generated text is tested (see docs/clusters.md). Design:
- node image: rancher/k3s has no python3 or apt, so floxk builds a Debian-based node image
  carrying a k3s binary the user supplies (`--k3s-binary`), python3, Nix and the shim
  (clusters/k3d/Dockerfile.in);
- containerd: k3s renders its config from config-v3.toml.tmpl; floxk's template starts
  with {{ template "base" . }} (k3s's own config) and appends the flox runtime;
- RuntimeClass flox: a manifest in /var/lib/rancher/k3s/server/manifests (auto-applied);
- dev hub and node.toml: k3d volumes on every node; node label through k3s --node-label.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

import yaml

from floxk._cluster import nodeimage
from floxk._cluster.constants import FLOX_NODE_LABEL
from floxk._cluster.kube import runtime_class
from floxk._cluster.provider import Provider
from floxk._cluster.spec import ClusterSpec
from floxk._proc import call
from shim.core.errors import FloxkError

K3D_API = "k3d.io/v1alpha5"
K3S_RUNC = "/var/lib/rancher/k3s/data/current/bin/runc"
TEMPLATE_PATH = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl"
MANIFESTS_DIR = "/var/lib/rancher/k3s/server/manifests"


def assets_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "clusters" / "k3d"


def render_containerd_template() -> str:
    """config-v3.toml.tmpl: k3s's base config plus the flox runtime."""
    text = (assets_dir() / "config-v3.toml.tmpl.in").read_text()
    return Template(text).substitute(shim_path=nodeimage.SHIM_PATH, runc_path=nodeimage.RUNC_PATH)


def render_dockerfile(base_image: str, *, labels: dict[str, str]) -> str:
    text = (assets_dir() / "Dockerfile.in").read_text()
    return Template(text).substitute(
        base_image=base_image,
        state_dir=nodeimage.STATE_DIR,
        hub_dir=nodeimage.HUB_DIR,
        lib_dir=nodeimage.LIB_DIR,
        shim_path=nodeimage.SHIM_PATH,
        runc_path=nodeimage.RUNC_PATH,
        k3s_runc=K3S_RUNC,
        labels=" ".join(
            f"{k}={json.dumps(v)}" for k, v in sorted({"dev.floxk.node": "k3s", **labels}.items())
        ),
    )


def runtime_class_manifest() -> str:
    return yaml.safe_dump(runtime_class(), sort_keys=False)


def render_config(spec: ClusterSpec, *, runtime_class_file: str) -> dict[str, Any]:
    """k3d's Simple config for spec. runtime_class_file: host path of the RuntimeClass
    manifest, mounted into the server's auto-applied manifests directory."""
    volumes = [
        {
            "volume": f"{m.host_path}:{m.node_path}" + (":ro" if m.read_only else ""),
            "nodeFilters": ["all"],
        }
        for m in spec.mounts
    ]
    volumes.append(
        {
            "volume": f"{runtime_class_file}:{MANIFESTS_DIR}/floxk-runtimeclass.yaml:ro",
            "nodeFilters": ["server:*"],
        }
    )
    return {
        "apiVersion": K3D_API,
        "kind": "Simple",
        "metadata": {"name": spec.name},
        "servers": 1,
        "agents": spec.workers,
        "image": spec.node_image,
        "volumes": volumes,
        "options": {
            "k3s": {
                "nodeLabels": [
                    {"label": f"{FLOX_NODE_LABEL}=true", "nodeFilters": ["server:*", "agent:*"]}
                ]
            },
            "kubeconfig": {"updateDefaultKubeconfig": True, "switchCurrentContext": True},
        },
    }


def config_yaml(spec: ClusterSpec, *, runtime_class_file: str) -> str:
    return yaml.safe_dump(
        render_config(spec, runtime_class_file=runtime_class_file), sort_keys=False
    )


class K3d(Provider):
    """Clusters made by the k3d CLI: artifacts only, creation refused (see the docstring)."""

    name = "k3d"

    def check_create(self) -> None:
        raise FloxkError(
            "k3d clusters are not created by this floxk yet: its node image needs a k3s binary "
            "and no k3s could be tested here",
            hint="use --provider kind; docs/clusters.md describes the k3d design and its files",
        )

    def node_count(self, spec: ClusterSpec) -> int:
        return 1 + spec.workers

    def create(self, spec: ClusterSpec, config_dir: Path, *, wait_seconds: int | None) -> None:
        self.check_create()
        runtime_class_file = config_dir / "runtimeclass.yaml"
        runtime_class_file.write_text(runtime_class_manifest())
        config_path = config_dir / "k3d.yaml"
        config_path.write_text(config_yaml(spec, runtime_class_file=str(runtime_class_file)))
        argv = ["k3d", "cluster", "create", "--config", str(config_path)]
        if wait_seconds:
            argv += ["--wait", "--timeout", f"{wait_seconds}s"]
        call(argv, hint="k3d support is untested against a real k3s here: see docs/clusters.md")

    def delete(self, name: str) -> None:
        call(["k3d", "cluster", "delete", name])

    def clusters(self) -> list[str]:
        out = call(["k3d", "cluster", "list", "-o", "json"], hint="install k3d (k3d.io)").stdout
        return [c["name"] for c in json.loads(out or "[]")]

    def node_containers(self, name: str) -> list[str]:
        out = call(["k3d", "node", "list", "-o", "json"]).stdout
        return sorted(
            n["name"]
            for n in json.loads(out or "[]")
            if n.get("runtimeLabels", {}).get("k3d.cluster") == name
        )

    def load_image(self, name: str, image: str) -> None:
        call(["k3d", "image", "import", image, "--cluster", name])

    def kubeconfig(self, name: str) -> str:
        return call(["k3d", "kubeconfig", "get", name]).stdout


PROVIDER = K3d()
