"""What the cases share: the cluster handle, pods run to an outcome, kubectl, node access.

Pods are filled in by floxk's own `fill_pod` (runtimeClassName flox, the stub image, the
flox.dev/environment annotation), applied and followed with floxk's own pod code, so the
suite checks what `floxk run pod` users get. Every wait has a deadline and every failure
message carries the pod's state and events: when a case fails, its one line says why.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from floxk._cluster import pod as pods
from floxk._proc import call

# The cases name annotation keys through kit: the node's own definitions.
from shim.core.annotations import SKIP_CONTAINERS as SKIP_CONTAINERS
from shim.core.annotations import SKIP_CONTAINERS_EXEC as SKIP_CONTAINERS_EXEC

POD_TIMEOUT = 240  # a pod's first start realizes its environment on a busy node
TOOLBOX_REPO = "floxk.local/e2e-busybox"  # a plain image with a shell (static busybox)


@dataclass
class Cluster:
    """The cluster under test, as the cases see it."""

    provider: str  # kind, k3d or existing
    context: str
    kubeconfig: Path
    namespace: str  # everything the suite creates lives here
    run_id: str  # unique per run: makes fresh environment digests
    api: Any  # kubernetes ApiClient
    manager: Any  # the pytest-kubernetes manager
    tmp: Path
    _toolbox: str | None = None

    @property
    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @property
    def apps(self):
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def kubectl(
        self, *args: str, timeout: float = 90, check: bool = False, input: str | None = None
    ):
        """kubectl on this cluster and namespace (argument list, no shell); `input` goes to
        its stdin (`kubectl exec -i`)."""
        argv = ["kubectl", "--kubeconfig", str(self.kubeconfig), "--context", self.context]
        argv += ["-n", self.namespace, *args]
        proc = call(argv, check=False, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def apply(self, body: dict[str, Any]) -> None:
        from floxk._cluster import kube

        body.setdefault("metadata", {}).setdefault("namespace", self.namespace)
        kube.apply(self.api, body)

    def node(self, name: str) -> Node | None:
        """Shell access to a node, where its container runs in the local Docker Engine."""
        return Node.find(name)

    def toolbox_image(self) -> str:
        """A plain image with a shell (static busybox), loaded into the nodes once."""
        if self._toolbox is None:
            self._toolbox = ensure_toolbox_image()
            self.manager.load_image(self._toolbox)
        return self._toolbox


def manifest(
    install: dict[str, str], *, vars: dict[str, str] | None = None, hook: str | None = None
) -> str:
    """A manifest.toml: install id -> catalog pkg-path, [vars], an on-activate hook."""
    lines = ["version = 1", "", "[install]"]
    lines += [f'{iid}.pkg-path = "{pkg}"' for iid, pkg in install.items()]
    if vars:
        lines += ["", "[vars]", *(f'{name} = "{value}"' for name, value in vars.items())]
    if hook:
        lines += ["", "[hook]", "on-activate = '''", hook.strip("\n"), "'''"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Published:
    """An environment `floxk env push` put on the cluster's dev hub."""

    ref: str  # OWNER/NAME:GEN, pinned
    name: str  # OWNER/NAME: follows the latest push
    generation: int
    digest: str  # the lock's digest: names the environment tree on a node


# --- pods ----------------------------------------------------------------------------------


def flox_pod(
    name: str,
    env: str,
    command: list[str] | None = None,
    *,
    containers: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    restart: str = "Never",
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod in environment `env`, filled in like `floxk run pod` does."""
    containers = containers or [{"name": "main", "command": command}]
    manifest = {
        "metadata": {"name": name, "annotations": dict(annotations or {})},
        "spec": {
            "restartPolicy": restart,
            # `sleep` as PID 1 ignores SIGTERM: without this, every delete waits 30 s.
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
            **(spec or {}),
        },
    }
    return pods.fill_pod(manifest, env_ref=env)


def image_container(name: str, image: str, command: list[str], **more: Any) -> dict[str, Any]:
    """A container on `image`, a local image loaded into the nodes (never pulled)."""
    return {"name": name, "image": image, "imagePullPolicy": "Never", "command": command, **more}


@dataclass
class Outcome:
    """Where a pod ended up, with what a failure message needs."""

    name: str
    state: pods.PodState
    logs: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    node: str | None = None

    @property
    def log(self) -> str:
        return "\n".join(self.logs.values())

    def why(self) -> str:
        """One paragraph: the state, the reason, the last events (the runtime's words)."""
        parts = [f"pod {self.name}: {self.state.summary}"]
        if self.state.message:
            parts.append(self.state.message.strip()[-400:])
        warnings = [e for e in self.events if e["type"] != "Normal"] or self.events
        for e in warnings[-3:]:
            parts.append(f"event {e['reason']}: {e['message'][-400:]}")
        tail = self.log.strip().splitlines()[-3:]
        if tail:
            parts.append("log: " + " / ".join(tail)[-300:])
        return " | ".join(parts)


def _delete_pod(cluster: Cluster, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.core.delete_namespaced_pod(name, cluster.namespace, grace_period_seconds=0)
    except ApiException as e:
        if e.status != 404:
            raise
    for pods_left in _watch_pod(cluster, name, timeout=60):
        if name not in pods_left:
            return


def _watch_pod(cluster: Cluster, name: str, *, timeout: float, resync: float | None = None):
    from floxk._cluster import kube

    return kube.watching(
        cluster.core.list_namespaced_pod,
        cluster.namespace,
        field_selector=f"metadata.name={name}",
        timeout=timeout,
        resync=resync,
    )


def start(cluster: Cluster, manifest: dict[str, Any]) -> None:
    manifest["metadata"]["namespace"] = cluster.namespace
    _delete_pod(cluster, manifest["metadata"]["name"])
    cluster.apply(manifest)


def outcome(cluster: Cluster, name: str) -> Outcome:
    """The pod's current state, every container's log so far, its events."""
    from kubernetes.client.exceptions import ApiException

    raw = cluster.core.read_namespaced_pod(name, cluster.namespace)
    result = Outcome(name=name, state=pods.pod_state(raw), node=raw.spec.node_name)
    for c in raw.spec.containers:
        try:
            result.logs[c.name] = cluster.core.read_namespaced_pod_log(
                name, cluster.namespace, container=c.name
            )
        except ApiException:
            result.logs[c.name] = ""
    result.events = pods.events(cluster.api, name, cluster.namespace)
    return result


def wait_for(
    cluster: Cluster,
    name: str,
    until: Callable[[pods.PodState], bool] | None = None,
    *,
    timeout: float = POD_TIMEOUT,
) -> Outcome:
    """Watch the pod until `until(state)`, floxk's notion of done, or the deadline; the
    outcome either way: the case's assertions say what was expected. Every 5 s the pod's
    events are read too: a sandbox that keeps failing ends the wait early."""
    checked = time.monotonic()
    for seen in _watch_pod(cluster, name, timeout=timeout, resync=5):
        if name in seen:
            state = pods.pod_state(seen[name])
            if state.done or (until and until(state)):
                break
        if time.monotonic() - checked >= 5:
            checked = time.monotonic()
            if sandbox_keeps_failing(cluster, name):
                break
    return outcome(cluster, name)


def sandbox_keeps_failing(cluster: Cluster, name: str) -> bool:
    """kubelet retries a pod sandbox that cannot be created (e.g. no runtime for the
    RuntimeClass's handler) forever: the third failure ends a wait with its message."""
    failures = sum(
        e["count"] or 1
        for e in pods.events(cluster.api, name, cluster.namespace)
        if e["reason"] == "FailedCreatePodSandBox"
    )
    return failures >= 3


def run_pod(cluster: Cluster, manifest: dict[str, Any], **kw) -> Outcome:
    """Apply a run-to-completion pod and wait until it is done."""
    start(cluster, manifest)
    return wait_for(cluster, manifest["metadata"]["name"], **kw)


def ready(state: pods.PodState) -> bool:
    return state.phase == "Running" and all(c.get("ready") for c in state.containers)


def start_pod(cluster: Cluster, manifest: dict[str, Any], **kw) -> Outcome:
    """Apply a long-running pod and wait until every container is ready (or it failed)."""
    start(cluster, manifest)
    return wait_for(cluster, manifest["metadata"]["name"], ready, **kw)


def exec_in(cluster: Cluster, pod: str, *command: str, container: str | None = None):
    """`kubectl exec` (through the runtime's exec path, as a user's would go)."""
    args = ["exec", pod] + (["-c", container] if container else []) + ["--", *command]
    return cluster.kubectl(*args)


def env_of(text: str) -> dict[str, str]:
    """`env` output as a dict (values on one line)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.replace("_", "").isalnum():
            out[key] = value
    return out


def mounts_at(text: str, target: str) -> list[str]:
    """Option strings of the /proc/mounts lines mounted at `target`."""
    return [line.split()[3] for line in text.splitlines() if line.split()[1:2] == [target]]


# --- nodes -----------------------------------------------------------------------------------


class Node:
    """A node whose container runs in the local Docker Engine (kind, k3d)."""

    def __init__(self, container) -> None:
        self.container = container

    @classmethod
    def find(cls, name: str) -> Node | None:
        try:
            from floxk._cluster import nodeimage

            return cls(nodeimage.docker_client().containers.get(name))
        except Exception:
            return None

    def sh(self, *argv: str) -> tuple[int, str]:
        code, output = self.container.exec_run(list(argv))
        return code, output.decode(errors="replace")

    def read(self, path: str) -> str:
        code, text = self.sh("cat", path)
        return text if code == 0 else ""

    def json(self, *argv: str) -> Any:
        code, text = self.sh(*argv)
        if code != 0:
            raise AssertionError(f"{' '.join(argv)} on node failed ({code}): {text[-600:]}")
        return json.loads(text[text.index("{") :])


# --- images ------------------------------------------------------------------------------------


def ensure_toolbox_image(busybox: str = "/bin/busybox") -> str:
    """floxk.local/e2e-busybox:<digest>: /bin/busybox and /bin/sh, made with `docker import`
    from the host's static busybox (the one the catalog is built with). No registry."""
    applets = ("sh", "env", "cat", "sleep", "grep")
    return import_image(TOOLBOX_REPO, busybox=busybox, applets=applets, path="/bin")


def import_image(
    repo: str,
    *,
    busybox: str = "/bin/busybox",
    applets: tuple[str, ...] = (),
    files: dict[str, tuple[str, int]] | None = None,
    path: str = "/bin",
) -> str:
    """A local image REPO:<digest> with /bin/busybox (and links for applets), extra files
    {path: (text, mode)} and ENV PATH=path, made with `docker import` (no registry)."""
    import hashlib

    import docker.errors

    from floxk._cluster import nodeimage

    data = Path(busybox).read_bytes()
    files = dict(files or {})
    key = hashlib.sha256(data)
    key.update(json.dumps([applets, files, path], sort_keys=True).encode())
    tag = f"{repo}:{key.hexdigest()[:12]}"
    client = nodeimage.docker_client()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = {"bin", "tmp"} | {
            "/".join(f.strip("/").split("/")[:i])
            for f in files
            for i in range(1, len(f.strip("/").split("/")))
        }
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for name, (text, mode) in sorted(files.items()):
            blob = text.encode()
            info = tarfile.TarInfo(name.strip("/"))
            info.size, info.mode = len(blob), mode
            tar.addfile(info, io.BytesIO(blob))
    name, version = tag.rsplit(":", 1)
    client.api.import_image_from_data(
        buf.getvalue(), repository=name, tag=version, changes=[f"ENV PATH={path}"]
    )
    return tag
