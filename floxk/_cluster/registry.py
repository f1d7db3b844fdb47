"""`floxk up --registry`: a local image registry the cluster's nodes pull from, as kind
documents it (https://kind.sigs.k8s.io/docs/user/local-registry/) and ctlptl sets it up.

- One registry container, `floxk-registry`, for every floxk cluster on this Docker Engine:
  the CNCF distribution registry (the binary clusters/helm/build-tools.sh builds from the Go
  module proxy, put FROM scratch into a local image: nothing is pulled), published on
  127.0.0.1:5001, so `docker push localhost:5001/NAME:TAG` works from the laptop (the Engine
  allows plain HTTP to localhost).
- The nodes' containerd reads registry hosts from `config_path` (the containerd patch below);
  each node gets certs.d/localhost:5001/hosts.toml pointing at the container by name on the
  `kind` network, so a pod's `image: localhost:5001/NAME:TAG` is pulled from it.
- The ConfigMap kube-public/local-registry-hosting (KEP-1755) tells tools where to push.
Image pods and flox pods then run side by side in one cluster.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shim.core import containerd as ctrd
from shim.core.errors import FloxkError, NotFoundError

CONTAINER = "floxk-registry"
HOST_PORT = 5001
PUSH_HOST = f"localhost:{HOST_PORT}"
NETWORK = "kind"
CERTS_DIR = "/etc/containerd/certs.d"
IMAGE_REPO = "floxk.local/registry"
CONFIG = {  # JSON is YAML
    "version": 0.1,
    "log": {"level": "warn"},
    "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": True}},
    "http": {"addr": ":5000"},
}
Progress = Callable[[str], None]


def registry_patch(config_version: int = 2) -> dict[str, Any]:
    """The containerd config (merged into the flox runtime's patch: one patch, one
    `version`) that makes the node read certs.d/<host>/hosts.toml."""
    plugin = ctrd.CRI_RUNTIME_PLUGIN[config_version]
    return {
        "version": config_version,
        "plugins": {plugin: {"registry": {"config_path": CERTS_DIR}}},
    }


def hosts_toml() -> str:
    return f'server = "http://{CONTAINER}:5000"\n\n[host."http://{CONTAINER}:5000"]\n'


def registry_binary() -> Path:
    """The distribution registry built by clusters/helm/build-tools.sh (cached by version)."""
    from floxk._cluster.spec import cache_dir

    found = sorted((cache_dir() / "kind").glob("helm-tools-*/registry"))
    if not found:
        raise NotFoundError(
            "no registry binary is built",
            hint="bash clusters/helm/build-tools.sh builds it from the Go module proxy (cached)",
        )
    return found[-1]


def ensure_image(client, progress: Progress) -> str:
    """floxk.local/registry:<build> in the Engine: the binary and its config, FROM scratch."""
    import docker.errors

    binary = registry_binary()
    tag = f"{IMAGE_REPO}:{binary.parent.name.removeprefix('helm-tools-')}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    progress(f"building the registry image {tag}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(binary, arcname="bin/registry")
        data = json.dumps(CONFIG).encode()
        info = tarfile.TarInfo("etc/distribution/config.yml")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        for d in ("var/lib/registry", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
    repo, version = tag.rsplit(":", 1)
    client.api.import_image_from_data(
        buf.getvalue(),
        repository=repo,
        tag=version,
        changes=[
            'ENTRYPOINT ["/bin/registry", "serve", "/etc/distribution/config.yml"]',
            "ENV OTEL_TRACES_EXPORTER=none",
            "EXPOSE 5000",
        ],
    )
    return tag


def ensure_running(client, progress: Progress) -> dict[str, Any]:
    """The registry container, created or started when needed, on the kind network."""
    import docker.errors

    image = ensure_image(client, progress)
    try:
        container = client.containers.get(CONTAINER)
    except docker.errors.NotFound:
        progress(f"starting the registry {CONTAINER} on {PUSH_HOST}")
        try:
            container = client.containers.run(
                image,
                name=CONTAINER,
                detach=True,
                restart_policy={"Name": "always"},
                ports={"5000/tcp": ("127.0.0.1", HOST_PORT)},
                labels={"dev.floxk.registry": "1"},
            )
        except docker.errors.APIError as e:
            raise FloxkError(
                f"the registry container could not start: {e.explanation or e}",
                hint=f"is port {HOST_PORT} taken? `docker ps` shows what holds it",
            ) from e
    if container.status != "running":
        container.start()
    container.reload()
    if NETWORK not in container.attrs["NetworkSettings"]["Networks"]:
        client.networks.get(NETWORK).connect(container)
    return {"container": CONTAINER, "push": PUSH_HOST, "image": image}


def configure_nodes(client, nodes: list[str]) -> None:
    """certs.d/localhost:5001/hosts.toml on every node (containerd reads it on each pull)."""
    directory = f"{CERTS_DIR}/{PUSH_HOST}"
    for node in nodes:
        container = client.containers.get(node)
        # The file's text is passed as an argument ($0): exec_run has no stdin for data.
        code, out = container.exec_run(
            ["sh", "-c", f'mkdir -p "{directory}" && printf "%s" "$0" > "{directory}/hosts.toml"']
            + [hosts_toml()]
        )
        if code != 0:
            raise FloxkError(
                f"could not write {directory}/hosts.toml on {node}: {out.decode(errors='replace')}"
            )


def hosting_configmap() -> dict[str, Any]:
    """KEP-1755's kube-public/local-registry-hosting: where tools push for this cluster."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
        "data": {
            "localRegistryHosting.v1": f'host: "{PUSH_HOST}"\n'
            'help: "https://kind.sigs.k8s.io/docs/user/local-registry/"\n'
        },
    }
