"""`floxk shim deploy` / `undeploy`: the flox runtime onto the nodes of a running cluster.

The installer image is built locally, without a registry or base image (recipe in
clusters/installer/): Debian's python3 and nsenter unpacked into a scratch image, the
agent, the shim zipapps, and a flat apt repository holding python3 + nix-bin (with every
dependency) for each Debian release the target nodes run. A privileged DaemonSet in
namespace floxk-system (hostPID) runs the agent on each node labelled flox.dev/install=true
(or every node): it copies the payload onto the node and runs node.sh there through
nsenter (python3/nix when missing, `floxk-node install`, containerd restart), then sets
the node's label flox.dev/shim to provisioned (+ flox.dev/enabled=true) or failed.
RuntimeClass flox schedules flox pods onto the enabled nodes.

The objects come from the Helm chart clusters/helm/floxk-node (`helm template`), so
deploy, `floxk shim manifests` and `helm install` apply the same ones. undeploy does what
`helm uninstall` does: the chart's uninstall hook (an uninstaller DaemonSet on nodes
labelled flox.dev/shim=removing, and Job floxk-uninstall that so labels every floxk node
and waits) runs `floxk-node uninstall --restart` on each node and removes the labels;
then the chart's objects are deleted.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from floxk._cluster import debs as debian
from floxk._cluster import kube
from floxk._cluster.spec import cache_dir
from floxk._proc import call
from shim.core.errors import ConfigError, NotFoundError

NAMESPACE = "floxk-system"
INSTALLER = "floxk-installer"
INSTALL_LABEL = "flox.dev/install"
STATE_LABEL = "flox.dev/shim"
ENABLED_LABEL = kube.FLOX_NODE_LABEL
MESSAGE_ANNOTATION = "flox.dev/shim-message"
IMAGE_REPO = "floxk.local/installer"
INPUTS_LABEL = "dev.floxk.installer.inputs"

AGENT_PACKAGES = ["python3", "util-linux"]  # what the agent runs with, inside the image
NODE_PACKAGES = ["python3", "nix-bin"]  # what a node gets when it lacks them

NODE_FILES = ["node.sh", "check-node-toml.py"]  # run on the node, from the payload
RECIPE_FILES = ["Dockerfile", "agent.py", *NODE_FILES]

Progress = Callable[[str], None]


def recipe_dir() -> Path:
    """clusters/installer/ of this checkout: Dockerfile, agent.py, node.sh, check-node-toml.py."""
    return Path(__file__).resolve().parents[1] / "clusters" / "installer"


# --- nodes --------------------------------------------------------------------------------


def debian_codename(os_image: str) -> str | None:
    """'Debian GNU/Linux 12 (bookworm)' (a node's status.nodeInfo.osImage) -> 'bookworm'."""
    m = re.match(r"Debian GNU/Linux .*\(([a-z]+)\)\s*$", os_image or "")
    return m.group(1) if m else None


def host_codename() -> str:
    return debian.os_release_codename(Path("/etc/os-release").read_text())


# --- the image ----------------------------------------------------------------------------


def fetch_debs(packages: list[str], codename: str, say: Progress) -> list[Path]:
    """`packages` and their whole dependency closure for Debian `codename` (cached).

    Resolved against an empty dpkg status: the result must work in a scratch image and on
    any node of that release; apt on the node installs only what it lacks.
    """
    key = hashlib.sha256(f"{codename} {' '.join(sorted(packages))}".encode()).hexdigest()
    return debian.cached(
        packages,
        codename=codename,
        dpkg_status="",
        dest=cache_dir() / "installer" / f"debs-{codename}-{key[:12]}",
        say=say,
        what=f"downloading {', '.join(packages)} with dependencies for Debian {codename}",
    )


def packages_index(debs: list[Path]) -> str:
    """A flat apt repository's Packages file for debs lying beside it."""
    stanzas = []
    for deb in debs:
        control = call(["dpkg-deb", "-f", str(deb)]).stdout.rstrip("\n")
        data = deb.read_bytes()
        stanzas.append(
            f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    return "\n".join(stanzas)


def release_file(packages: str) -> str:
    """An (unsigned) Release for the flat repository; the node trusts it as a local file."""
    data = packages.encode()
    return (
        "Origin: floxk\nLabel: floxk-installer\nSuite: floxk\nCodename: floxk\n"
        "Date: Thu, 01 Jan 1970 00:00:00 UTC\n"  # fixed: the image stays reproducible
        "Architectures: amd64 arm64 all\nComponents:\n"
        "Description: python3 and nix-bin for floxk nodes\n"
        f"SHA256:\n {hashlib.sha256(data).hexdigest()} {len(data)} Packages\n"
    )


@dataclass(frozen=True)
class InstallerImage:
    tag: str
    inputs: str
    codenames: list[str]
    built: bool  # False: an image with these inputs existed already


def _inputs(
    zipapps: dict[str, bytes], node_debs: dict[str, list[Path]], agent_debs: list[Path]
) -> str:
    h = hashlib.sha256()
    for name in RECIPE_FILES:
        h.update(name.encode() + b"\0" + (recipe_dir() / name).read_bytes())
    h.update(b"nix.conf\0" + _nix_conf().encode())
    h.update(b"deploy\0" + Path(__file__).read_bytes())  # Packages/Release rendering
    for name, data in sorted(zipapps.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    for codename, files in sorted(node_debs.items()):
        h.update(f"repo {codename} {' '.join(p.name for p in files)}\n".encode())
    h.update(f"rootfs {' '.join(p.name for p in agent_debs)}\n".encode())
    return h.hexdigest()


def _nix_conf() -> str:
    from floxk._cluster.nodeimage import assets_dir

    return (assets_dir() / "nix.conf").read_text()


def merge_usr(rootfs: Path) -> None:
    """/bin, /sbin, /lib, /lib64 -> usr/... where the packages put them only under /usr.

    From trixie on, libc6 ships the ELF loader as /usr/lib64/ld-linux-x86-64.so.2 and the
    top-level links come from base-files (not unpacked here): without them no program in
    the image can start ("exec /usr/bin/python3: no such file or directory").
    """
    for name in ("bin", "sbin", "lib", "lib64"):
        top, under = rootfs / name, rootfs / "usr" / name
        if not top.exists() and not top.is_symlink() and under.is_dir():
            top.symlink_to(f"usr/{name}")


def write_context(
    dest: Path, *, zipapps: dict[str, bytes], node_debs: dict[str, list[Path]],
    agent_debs: list[Path], inputs: str,
) -> None:  # fmt: skip
    """Lay the installer image's build context out in dest (see clusters/installer/Dockerfile)."""
    rootfs = dest / "rootfs"
    rootfs.mkdir(parents=True)
    for deb in agent_debs:  # unpacked, no maintainer scripts: python3 and nsenter need none
        call(["dpkg-deb", "-x", str(deb), str(rootfs)])
    merge_usr(rootfs)
    payload = dest / "payload"
    host = payload / "host"
    (host / "bin").mkdir(parents=True)
    shutil.copyfile(recipe_dir() / "agent.py", payload / "agent.py")
    for name in NODE_FILES:
        shutil.copyfile(recipe_dir() / name, host / name)
    (host / "nix.conf").write_text(_nix_conf())
    for name, data in zipapps.items():
        (host / "bin" / name).write_bytes(data)
        (host / "bin" / name).chmod(0o755)
    for codename, files in node_debs.items():
        repo = host / "repo" / codename
        repo.mkdir(parents=True)
        for deb in files:
            shutil.copyfile(deb, repo / deb.name)
        index = packages_index(sorted(repo.glob("*.deb")))
        (repo / "Packages").write_text(index)
        (repo / "Release").write_text(release_file(index))
    dockerfile = (recipe_dir() / "Dockerfile").read_text()
    (dest / "Dockerfile").write_text(
        f'{dockerfile}LABEL dev.floxk.installer="true" {INPUTS_LABEL}="{inputs}"\n'
    )


def build_installer_image(
    codenames: list[str], *, tag: str | None = None, client=None, progress: Progress | None = None
) -> InstallerImage:
    """Build (or find) the installer image for nodes of these Debian releases."""
    from floxk._cluster import nodeimage
    from floxk._shimbuild import build_zipapps

    say = progress or (lambda _m: None)
    client = client or nodeimage.docker_client()
    with tempfile.TemporaryDirectory(prefix="floxk-installer-") as tmp:
        built = build_zipapps(Path(tmp) / "bin")
        zipapps = {a.name: a.path.read_bytes() for a in built.artifacts}
        codenames = sorted(set(codenames))
        node_debs = {c: fetch_debs(NODE_PACKAGES, c, say) for c in codenames}
        agent_debs = fetch_debs(AGENT_PACKAGES, codenames[0] if codenames else host_codename(), say)
        inputs = _inputs(zipapps, node_debs, agent_debs)
        tag = tag or f"{IMAGE_REPO}:{built.version}-{inputs[:12]}"
        if _image_inputs(client, tag) == inputs:
            say(f"installer image {tag} is up to date")
            return InstallerImage(tag, inputs, codenames, built=False)
        ctx = Path(tmp) / "context"
        write_context(
            ctx, zipapps=zipapps, node_debs=node_debs, agent_debs=agent_debs, inputs=inputs
        )
        say(f"building installer image {tag}")
        nodeimage._docker_build(client, ctx, tag, say)
    return InstallerImage(tag, inputs, codenames, built=True)


@dataclass(frozen=True)
class PushedImage:
    ref: str
    digest: str | None


def push_image(
    local_tag: str, ref: str, *, client=None, progress: Progress | None = None
) -> PushedImage:
    """Tag the built image as ref (REGISTRY/NAME:TAG) and push it with the Engine's
    credentials (`docker login REGISTRY`)."""
    from floxk._cluster import nodeimage

    say = progress or (lambda _m: None)
    client = client or nodeimage.docker_client()
    repo, tag = split_image(ref)
    if "/" not in repo:
        raise ConfigError(
            f"--push {ref!r} names no registry",
            hint="give REGISTRY/NAME:TAG, e.g. registry.example.org:5000/floxk/installer:0.1.0",
        )
    import docker.errors

    client.images.get(local_tag).tag(repo, tag)
    say(f"pushing {repo}:{tag}")
    digest = None

    def failed(msg: str) -> ConfigError:
        return ConfigError(
            f"pushing {repo}:{tag} failed: {msg}",
            hint="is the registry reachable, and logged in (docker login)? A registry "
            "without TLS must be in the Engine's insecure-registries (localhost is)",
        )

    try:
        for line in client.images.push(repo, tag=tag, stream=True, decode=True):
            if "error" in line or "errorDetail" in line:
                raise failed((line.get("errorDetail") or {}).get("message") or line.get("error"))
            digest = (line.get("aux") or {}).get("Digest") or digest
    except docker.errors.APIError as e:
        raise failed(str(e.explanation or e)) from e
    return PushedImage(f"{repo}:{tag}", digest)


def _image_inputs(client, tag: str) -> str | None:
    import docker.errors

    try:
        return (client.images.get(tag).labels or {}).get(INPUTS_LABEL)
    except docker.errors.ImageNotFound:
        return None


# --- manifests: rendered from the Helm chart ----------------------------------------------
# The chart (clusters/helm/floxk-node) is the one source of the objects: `helm install`
# uses it, and deploy, undeploy and `floxk shim manifests` render it with `helm template`.


def chart_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "clusters" / "helm" / "floxk-node"


def find_helm() -> str:
    """helm on PATH, else the one clusters/helm/build-tools.sh built into the cache."""
    found = shutil.which("helm")
    if found:
        return found
    built = sorted((cache_dir() / "kind").glob("helm-tools-*/helm"))
    if built:
        return str(built[-1])
    raise NotFoundError(
        "helm is not installed",
        hint="bash clusters/helm/build-tools.sh builds it (from the Go module proxy), "
        "or install helm >= 3.8",
    )


def split_image(ref: str) -> tuple[str, str]:
    """'registry:5000/floxk/installer:0.1.0' -> ('registry:5000/floxk/installer', '0.1.0')."""
    if "@" in ref:
        raise ConfigError(f"image {ref!r}: give a tag, not a digest")
    repo, colon, tag = ref.rpartition(":")
    if not colon or "/" in tag:  # no tag, or the colon was a registry port
        return ref, "latest"
    return repo, tag


def chart_values(
    image: str | None = None, *, all_nodes: bool = False, node_toml: str | None = None,
    run_id: str | None = None, uninstall_timeout: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Chart values for deploy's options; the Namespace object is part of the output."""
    values: dict[str, Any] = {"createNamespace": True}
    if image:
        repo, tag = split_image(image)
        values["image"] = {"repository": repo, "tag": tag}
    if all_nodes:
        values["allNodes"] = True
    if node_toml is not None:
        values["node"] = {"toml": node_toml}
    if run_id:
        values["rolloutId"] = run_id
    if uninstall_timeout is not None:
        values["uninstall"] = {"timeoutSeconds": int(uninstall_timeout)}
    return values


def render(
    values: dict[str, Any] | None = None, *, value_files: Sequence[Path] = (),
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:  # fmt: skip
    """`helm template` of the chart: every object, hooks included, in helm's install order."""
    import json

    import yaml

    with tempfile.TemporaryDirectory(prefix="floxk-chart-") as tmp:
        vfile = Path(tmp) / "values.json"
        vfile.write_text(json.dumps(values or {}))
        argv = [find_helm(), "template", "floxk-node", str(chart_dir()), "--namespace", namespace]
        for f in value_files:
            argv += ["--values", str(f)]
        out = call(
            [*argv, "--values", str(vfile)],
            hint="the chart refused these values; the message above says which",
        ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def deploy_objects(
    image: str, *, all_nodes: bool, node_toml: str | None, run_id: str
) -> list[dict[str, Any]]:
    """Everything deploy applies, in order (the chart without its hooks)."""
    values = chart_values(image, all_nodes=all_nodes, node_toml=node_toml, run_id=run_id)
    return [o for o in render(values) if not is_hook(o)]


def manifests(
    image: str | None = None, *, all_nodes: bool = False, node_toml: str | None = None,
    value_files: Sequence[Path] = (), namespace: str = NAMESPACE, uninstall: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """Plain objects for kubectl/GitOps: the install objects, or (uninstall) the hook that
    takes the runtime off every node (apply it, wait for Job floxk-uninstall, then delete
    the install objects)."""
    values = chart_values(image, all_nodes=all_nodes, node_toml=node_toml)
    objects = render(values, value_files=list(value_files), namespace=namespace)
    out = [o for o in objects if is_hook(o) == uninstall]
    if uninstall:
        for o in out:  # plain manifests: helm's hook annotations mean nothing to kubectl
            anns = o["metadata"].get("annotations") or {}
            for k in [k for k in anns if k.startswith("helm.sh/")]:
                del anns[k]
            if not anns:
                o["metadata"].pop("annotations", None)
    return out


# --- the cluster --------------------------------------------------------------------------


API_HINT = "pass --kubeconfig and/or --context of the cluster to deploy to"


@dataclass
class NodeState:
    name: str
    state: str | None  # pending | provisioned | failed | removing | None (no label)
    message: str | None = None
    os_image: str = ""


@dataclass
class DeployResult:
    action: str  # deploy | undeploy
    image: str
    image_built: bool
    nodes: list[NodeState] = field(default_factory=list)
    runtime_class: bool = False

    @property
    def ok(self) -> bool:
        good = "provisioned" if self.action == "deploy" else None
        return all(n.state == good for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def node_states(api) -> dict[str, NodeState]:
    from kubernetes import client

    return {n.metadata.name: node_state(n) for n in client.CoreV1Api(api).list_node().items}


def node_state(n) -> NodeState:
    """Where the installer stands on a node (a V1Node), from its label and annotation."""
    return NodeState(
        name=n.metadata.name,
        state=(n.metadata.labels or {}).get(STATE_LABEL),
        message=(n.metadata.annotations or {}).get(MESSAGE_ANNOTATION),
        os_image=n.status.node_info.os_image if n.status.node_info else "",
    )


def _label(api, name: str, labels: dict[str, str | None]) -> None:
    from kubernetes import client

    client.CoreV1Api(api).patch_node(
        name, {"metadata": {"labels": labels, "annotations": {MESSAGE_ANNOTATION: None}}}
    )


def _wait(
    api, names: list[str], done: Callable[[NodeState], bool], *, timeout: float, say: Progress
) -> list[NodeState]:
    from kubernetes import client

    last = summary = None
    for nodes in kube.watching(client.CoreV1Api(api).list_node, timeout=timeout):
        current = [node_state(nodes[n]) if n in nodes else NodeState(n, None) for n in names]
        summary = ", ".join(f"{s.name}={s.state or '-'}" for s in current)
        if summary != last:
            say(f"nodes: {summary}")
            last = summary
        if all(done(s) for s in current):
            return current
    raise kube.WaitTimeout(
        f"nodes not done after {timeout:.0f} s: {summary}",
        hint=f"kubectl -n {NAMESPACE} logs -l app.kubernetes.io/part-of=floxk shows the agent",
    )


def _load_into_kind(cluster: str, tag: str, say: Progress) -> None:
    from floxk._cluster import provider as providers

    say(f"loading {tag} into kind cluster {cluster}")
    providers.get("kind").load_image(cluster, tag)


def deploy(
    api, *, image_tag: str | None = None, load_into_kind: str | None = None,
    all_nodes: bool = False, node_toml: str | None = None, wait: bool = True,
    timeout: float = 600, progress: Progress | None = None,
) -> DeployResult:  # fmt: skip
    """Build the installer image, run it on the target nodes, add RuntimeClass flox."""
    say = progress or (lambda _m: None)
    from kubernetes import client

    nodes = client.CoreV1Api(api).list_node().items
    targets = [
        n for n in nodes if all_nodes or (n.metadata.labels or {}).get(INSTALL_LABEL) == "true"
    ]
    if not targets:
        raise ConfigError(
            f"no node is labelled {INSTALL_LABEL}=true",
            hint=f"kubectl label node NODE {INSTALL_LABEL}=true, or pass --all-nodes",
        )
    codenames = [c for n in targets if (c := debian_codename(n.status.node_info.os_image))]
    image = build_installer_image(codenames, tag=image_tag, progress=say)
    if load_into_kind:
        from floxk._cluster import nodeimage, up

        _load_into_kind(load_into_kind, image.tag, say)
        # Flox pods name the stub image; an offline kind node cannot pull it.
        _load_into_kind(load_into_kind, up.ensure_stub_image(nodeimage.docker_client()), say)
    names = sorted(n.metadata.name for n in targets)
    for name in names:  # the agent moves each on; a stale "provisioned" must not count
        _label(api, name, {STATE_LABEL: "pending"})
    run_id = uuid.uuid4().hex[:12]
    for body in deploy_objects(image.tag, all_nodes=all_nodes, node_toml=node_toml, run_id=run_id):
        say(f"applying {body['kind']} {body['metadata']['name']}")
        kube.apply(api, body)
    result = DeployResult("deploy", image.tag, image.built, runtime_class=True)
    if wait:
        result.nodes = _wait(api, names, lambda s: s.state in ("provisioned", "failed"),
                             timeout=timeout, say=say)  # fmt: skip
    else:
        result.nodes = [node_states(api)[n] for n in names]
    return result


def undeploy(
    api, *, image_tag: str | None = None, load_into_kind: str | None = None,
    timeout: float = 600, progress: Progress | None = None,
) -> DeployResult:  # fmt: skip
    """What helm uninstall does: the chart's uninstall hook (uninstaller DaemonSet + Job
    floxk-uninstall, which marks every floxk node `removing`), then the chart's objects."""
    say = progress or (lambda _m: None)
    states = node_states(api)
    names = sorted(n for n, s in states.items() if s.state is not None)
    codenames = [c for n in names if (c := debian_codename(states[n].os_image))]
    image = build_installer_image(codenames, tag=image_tag, progress=say)
    result = DeployResult("undeploy", image.tag, image.built)
    objects = render(chart_values(image.tag, uninstall_timeout=timeout))
    hooks = [o for o in objects if is_hook(o)]
    release = [o for o in objects if not is_hook(o)]
    if names:
        if load_into_kind:
            _load_into_kind(load_into_kind, image.tag, say)
        for name in names:  # as the Job does; here too, so a stale "failed" cannot count
            _label(api, name, {STATE_LABEL: "removing", ENABLED_LABEL: None})
        for body in release:  # the hook needs the namespace and the service account
            if body["kind"] in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
                kube.apply(api, body)
        for body in hooks:
            _delete_object(api, body, say)  # a Job's template cannot change: a new one
            say(f"applying {body['kind']} {body['metadata']['name']}")
            kube.apply(api, body)
        result.nodes = _wait(api, names, lambda s: s.state in (None, "failed"),
                             timeout=timeout + 30, say=say)  # fmt: skip
        if not result.ok:  # keep the namespace: the agent's logs say what went wrong
            return result
    for body in [*hooks, *reversed(release)]:
        _delete_object(api, body, say)
    return result


def _delete_object(api, body: dict[str, Any], say: Progress) -> bool:
    meta = body["metadata"]
    return _delete(api, body["apiVersion"], body["kind"], meta["name"], meta.get("namespace"), say)


def _delete(api, api_version: str, kind: str, name: str, ns: str | None, say: Progress) -> bool:
    """Delete one object; False when it was not there."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import NotFoundError as Missing

    resource = DynamicClient(api).resources.get(api_version=api_version, kind=kind)
    try:
        resource.delete(
            name=name,
            namespace=ns,
            body={"propagationPolicy": "Background"} if kind in ("DaemonSet", "Job") else None,
        )
    except Missing:
        return False
    say(f"deleted {kind} {name}")
    return True


def check_node_toml(text: str) -> str:
    """The operator's node.toml, refused early when it does not parse."""
    import tomllib

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--node-config is not valid TOML: {e}") from e
    return text
