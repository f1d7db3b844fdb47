"""`floxk doctor`: what is missing on this machine and in the current cluster, each with a fix.

Returns a list of checks ({"check", "ok", "detail", "fix"}); the CLI renders them and
fails when one that matters failed. Optional tools (k3d) are reported, never fatal.
"""

from __future__ import annotations

import shutil
from typing import Any

from floxk._cluster import kube, nodecheck, nodeimage
from floxk._cluster import provider as providers
from floxk._cluster.constants import FLOX_NODE_LABEL
from floxk._cluster.spec import parse_context


def _check(name: str, ok: bool, detail: str = "", fix: str = "", required: bool = True):
    return {
        "check": name,
        "ok": ok,
        "detail": detail,
        "fix": "" if ok else fix,
        "required": required,
    }


def tool_checks() -> list[dict[str, Any]]:
    checks = []
    for tool, fix, required in (
        ("kind", "install kind (`task kind:image` links Debian's kind)", True),
        ("kubectl", "install kubectl (Debian: kubernetes-client)", True),
        ("nix-store", "install Debian's nix-bin (scripts/install-system.sh)", True),
        ("k3d", "install k3d for --provider k3d (optional)", False),
    ):
        path = shutil.which(tool)
        checks.append(_check(tool, path is not None, path or "not on PATH", fix, required))
    try:
        client = nodeimage.docker_client()
        checks.append(_check("docker", True, f"Engine {client.version().get('Version')}"))
    except Exception as e:
        checks.append(
            _check(
                "docker",
                False,
                str(e).splitlines()[0],
                "start Docker Engine (bash clusters/kind/dockerd.sh start) or set DOCKER_HOST",
            )
        )
    return checks


def cluster_checks(context: str | None = None) -> list[dict[str, Any]]:
    context = context or kube.current_context()
    parsed = parse_context(context)
    if parsed is None:
        return [
            _check(
                "cluster",
                False,
                f"current context {context or 'none'} is not kind-*/k3d-*",
                "floxk up (or kubectl config use-context kind-NAME)",
            )
        ]
    provider, name = parsed
    checks = []
    try:
        api = kube.api_client(context)
        rc = kube.has_runtime_class(api)
        nodes = kube.node_summaries(api)
    except Exception as e:
        return [
            _check(
                "cluster",
                False,
                f"{context}: {str(e).splitlines()[0]}",
                f"floxk up --name {name} (is the cluster running?)",
            )
        ]
    checks.append(
        _check(
            "RuntimeClass flox",
            rc,
            "handler flox" if rc else "missing",
            f"floxk up --name {name} applies it",
        )
    )
    unlabelled = [n["name"] for n in nodes if not n["flox_label"]]
    checks.append(
        _check(
            "node labels",
            not unlabelled,
            f"unlabelled: {', '.join(unlabelled)}"
            if unlabelled
            else f"{len(nodes)} node(s) {FLOX_NODE_LABEL}=true",
            f"kubectl label node NODE {FLOX_NODE_LABEL}=true",
        )
    )
    try:
        client = nodeimage.docker_client()
        containers = providers.get(provider).node_containers(name)
    except Exception as e:
        return checks + [
            _check("nodes", False, str(e).splitlines()[0], "floxk doctor needs docker")
        ]
    for c in containers:
        r = nodecheck.check_node(client, c)
        checks.append(
            _check(
                f"{c}: flox runtime",
                bool(r.get("flox_runtime")) and not [p for p in r["problems"] if "BinaryName" in p],
                f"BinaryName {r.get('binary_name')}",
                f"recreate the cluster: floxk up --recreate --name {name}",
            )
        )
        checks.append(
            _check(
                f"{c}: floxk-runc",
                bool(r.get("runc_answers")),
                r.get("shim_version") or "; ".join(r["problems"]),
                f"rebuild the node image: floxk up --recreate --name {name}",
            )
        )
    return checks
