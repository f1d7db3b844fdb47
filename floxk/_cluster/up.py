"""`floxk up` / `floxk down` / `floxk status`: the cores (plain arguments in, data out).

up, in order: the cluster's host files (dev hub, signing key, node.toml), the node image
(content-keyed, reused), the spec and its digest, the cluster (created only when missing;
an existing one with the same digest is left alone), the stub image, RuntimeClass flox and
node labels, and last the recorded spec digest, which marks a finished `up`.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from floxk._cluster import kind, kindimage, kube, nodecheck, nodeimage
from floxk._cluster import provider as providers
from floxk._cluster.constants import DEFAULT_CLUSTER_NAME, STUB_IMAGE
from floxk._cluster.spec import (
    DEFAULT_K8S_VERSION,
    ClusterFiles,
    ClusterSpec,
    Mount,
    cluster_files,
    context_name,
)
from floxk._proc import call
from shim.core import containerd as ctrd
from shim.core.errors import FloxkError

Progress = Callable[[str], None]


def ensure_files(provider: str, name: str) -> ClusterFiles:
    """The dev hub dir, a Nix signing key pair and node.toml trusting it (kept across ups)."""
    files = cluster_files(provider, name)
    files.hub.mkdir(parents=True, exist_ok=True)
    if not files.secret_key.exists():
        files.secret_key.parent.mkdir(parents=True, exist_ok=True)
        call(
            ["nix-store", "--generate-binary-cache-key", context_name(provider, name) + "-1"]
            + [str(files.secret_key), str(files.public_key)],
            hint="floxk signs what `floxk env push` sends to the dev hub with Nix",
        )
        files.secret_key.chmod(0o600)
    public = files.public_key.read_text().strip()
    text = nodeimage.render_node_toml(trusted_public_keys=[public])
    if not files.node_toml.exists() or files.node_toml.read_text() != text:
        files.node_toml.write_text(text)
    return files


def build_spec(
    *,
    provider: str,
    name: str,
    workers: int,
    k8s_version: str,
    node_image: str,
    files: ClusterFiles,
    restrict_oom_score_adj: bool,
    kind_config: str = "",
    registry: bool = False,
) -> ClusterSpec:
    mounts = (
        Mount(str(files.hub), nodeimage.HUB_DIR),
        Mount(str(files.node_toml), nodeimage.NODE_TOML),
    )
    patch = (
        nodeimage.containerd_patch(restrict_oom_score_adj=restrict_oom_score_adj)
        if provider == "kind"
        else ""  # k3d: the config-v3.toml.tmpl baked into its node image
    )
    if registry:  # floxk up --registry: nodes read registry hosts from certs.d
        import tomllib

        from floxk._cluster import registry as local_registry

        patch = ctrd.to_toml(ctrd.merge(tomllib.loads(patch), local_registry.registry_patch()))
    return ClusterSpec(
        provider=provider,
        name=name,
        workers=workers,
        k8s_version=k8s_version,
        node_image=node_image,
        containerd_patch=patch,
        mounts=mounts,
        kind_config=kind_config,
    )


def ensure_stub_image(client) -> str:
    """flox/empty:1.0.0 in the local Engine: one empty layer, no command (docker import)."""
    import docker.errors

    try:
        client.images.get(STUB_IMAGE)
    except docker.errors.ImageNotFound:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w"):
            pass
        repo, tag = STUB_IMAGE.rsplit(":", 1)
        client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    return STUB_IMAGE


def up(
    *,
    provider: str = "kind",
    name: str | None = None,
    workers: int = 0,
    k8s_version: str = DEFAULT_K8S_VERSION,
    base_image: str | None = None,
    base_source: str | None = None,
    wait: bool = True,
    timeout: float = 300,
    recreate: bool = False,
    config: str | Path | None = None,
    registry: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """config: the user's kind Cluster config (nodes, port mappings, mounts, networking
    kept; floxk's image, label, mounts and containerd patch added to every node).
    base_source: auto, upstream or offline (kindimage.py says how each picks the base).
    registry: a local registry the nodes pull from (floxk/_cluster/registry.py)."""
    say = progress or (lambda _m: None)
    source = kindimage.source_setting(base_source)  # a bad value fails before any work
    user_config = ""
    if config is not None:
        if provider != "kind":
            raise FloxkError("--config takes a kind Cluster config", hint="use --provider kind")
        if workers:
            raise FloxkError(
                "--workers and --config both say which nodes to make",
                hint="list the worker nodes in the config (nodes: - role: worker)",
            )
        data = kind.load_user_config(config, name=name)
        name = name or data.get("name") or DEFAULT_CLUSTER_NAME
        workers = kind.node_counts(data)[1]
        user_config = kind.canonical(data)
    name = name or DEFAULT_CLUSTER_NAME
    prov = providers.get(provider)
    prov.check_create()
    client = nodeimage.docker_client()
    files = ensure_files(provider, name)
    # The kind base: upstream's (local or pulled), or floxk's offline build (kindimage.decide).
    base_image, base = kindimage.ensure_base_image(
        client,
        k8s_version,
        source=source,
        given=base_image,
        progress=say,
    )
    image = nodeimage.build_node_image(base_image, client=client, progress=say)
    spec = build_spec(
        provider=provider,
        name=name,
        workers=workers,
        k8s_version=k8s_version,
        node_image=image.tag,
        files=files,
        restrict_oom_score_adj=ctrd.needs_restrict_oom_score_adj(),
        kind_config=user_config,
        registry=registry,
    )
    digest = spec.digest()
    result = {
        "provider": provider,
        "name": name,
        "context": spec.context,
        "spec_digest": digest,
        "node_image": image.tag,
        "node_image_built": image.built,
        "base": base.to_dict(),
        "shim": image.shim_version,
        "hub": files.hub_url,
        "created": False,
        "changed": False,
    }
    if prov.exists(name):
        recorded = kube.recorded_spec_digest(kube.api_client(spec.context))
        if recorded == digest and not recreate:
            say(f"cluster {spec.context} is up to date (spec {digest[:12]})")
            _with_registry(result, registry, client, prov.node_containers(name), say)
            if wait:
                kube.wait_schedulable(kube.api_client(spec.context), timeout=timeout, progress=say)
            return result
        if not recreate:
            why = "was not finished by floxk up" if recorded is None else "has another spec"
            raise FloxkError(
                f"cluster {spec.context} exists and {why} (recorded {(recorded or 'nothing')[:12]}, "
                f"wanted {digest[:12]})",
                hint=f"floxk up --recreate --name {name} deletes and recreates it",
            )
        say(f"deleting {spec.context} (--recreate)")
        prov.delete(name)
    files.spec_json.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    say(f"creating {provider} cluster {name} ({prov.node_count(spec)} node(s), image {image.tag})")
    prov.create(spec, files.root, wait_seconds=int(timeout) if wait else None)
    result["created"] = result["changed"] = True
    say(f"loading {STUB_IMAGE} into the nodes")
    prov.load_image(name, ensure_stub_image(client))
    api = kube.api_client(spec.context)
    kube.apply(api, kube.runtime_class())
    result["nodes"] = kube.label_nodes(api)
    if _with_registry(result, registry, client, prov.node_containers(name), say):
        kube.apply(api, _registry().hosting_configmap())
    if wait:
        kube.wait_schedulable(api, timeout=timeout, progress=say)
    kube.apply(api, kube.spec_configmap(spec.to_dict(), digest))
    return result


def _registry():
    from floxk._cluster import registry

    return registry


def _with_registry(result: dict, wanted: bool, client, nodes: list[str], say: Progress) -> bool:
    """--registry: the registry running and every node pointed at it (idempotent)."""
    if wanted:
        result["registry"] = _registry().ensure_running(client, say)
        _registry().configure_nodes(client, nodes)
    return wanted


def down(*, provider: str = "kind", name: str = DEFAULT_CLUSTER_NAME) -> dict[str, Any]:
    """Delete the cluster; nothing there is fine (rm -f). The dev hub stays on disk."""
    prov = providers.get(provider)
    if shutil.which(prov.name) is None or not prov.exists(name):
        return {"provider": provider, "name": name, "deleted": False}
    prov.delete(name)
    return {"provider": provider, "name": name, "deleted": True}


def status(*, name: str | None = None, verbose: bool = False) -> list[dict[str, Any]]:
    """Every kind/k3d cluster (or only `name`): nodes, shim version and runtime health;
    verbose: also each node's `floxk-node stats` (environments, bytes, GC, realizations)."""
    out = []
    client = None
    for prov in providers.installed():
        provider = prov.name
        for cluster in prov.clusters():
            if name and cluster != name:
                continue
            entry: dict[str, Any] = {
                "provider": provider,
                "name": cluster,
                "context": context_name(provider, cluster),
            }
            try:
                api = kube.api_client(entry["context"])
                entry["spec_digest"] = kube.recorded_spec_digest(api)
                entry["runtime_class"] = kube.has_runtime_class(api)
                nodes = {n["name"]: n for n in kube.node_summaries(api)}
            except Exception as e:  # an unreachable cluster is a status, not a crash
                entry["error"] = str(e).splitlines()[0]
                nodes = {}
            client = client or nodeimage.docker_client()
            entry["nodes"] = [
                {**nodes.get(c, {"name": c}), **nodecheck.check_node(client, c)}
                for c in prov.node_containers(cluster)
            ]
            if verbose:
                for n in entry["nodes"]:
                    n["stats"] = nodecheck.node_stats(client, n["node"])
            out.append(entry)
    return out


def node_toml_path(provider: str, name: str) -> Path:
    return cluster_files(provider, name).node_toml
