"""`floxk run pod`: fill a pod in for the flox runtime, apply it, follow it to an outcome.

fill_pod and pod_from_command are pure; the rest talks to the cluster and returns data.
A flox pod needs runtimeClassName flox, an image on every container (the stub image) and
the flox.dev/environment annotation; whatever the author already wrote is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from floxk._cluster import kube
from floxk._cluster.constants import STUB_IMAGE
from shim.core import hub
from shim.core.annotations import ENVIRONMENT as ENV_ANNOTATION
from shim.core.errors import FloxkError, NotFoundError

# Waiting reasons after which a container will not start without a change.
FATAL_WAITING = {
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
}
# Terminated reasons meaning the runtime never started the process (a failed `runc create`,
# e.g. an environment that cannot be realized): no logs, the message is in the events.
NEVER_STARTED = {"StartError", "ContainerCannotRun"}


# Where each pod-bearing kind keeps its pod template (the Pod itself: the object).
POD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ObjectFileError(FloxkError):
    """A Kubernetes manifest file that cannot be read, or an object in it that is not valid."""


def identity(kind: str, namespace: str | None, name: str) -> str:
    """How messages name an object: "Deployment team/web", "Namespace team"."""
    return f"{kind} {namespace + '/' if namespace else ''}{name}"


class Named:
    """kind, name and identity of an object from its body (`self.body`)."""

    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str | None:
        return self.body["metadata"].get("namespace")

    @property
    def identity(self) -> str:
        return identity(self.kind, self.namespace, self.name)


@dataclass
class ObjectRef:
    """An object by kind, name and namespace (what apply and delete report)."""

    kind: str
    name: str
    namespace: str | None

    @property
    def identity(self) -> str:
        return identity(self.kind, self.namespace, self.name)


@dataclass
class Document(Named):
    """One Kubernetes object read from a file, and where it came from (for messages)."""

    body: dict[str, Any]
    source: str  # the file, or "-" for stdin
    line: int  # 1-based line where the document starts

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def manifest_files(paths: Sequence[str | Path]) -> list[str]:
    """FILE, DIR (its *.yaml, *.yml, *.json, sorted; not recursive, like kubectl) or -."""
    out: list[str] = []
    for p in paths:
        p = str(p)
        if p == "-":
            out.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            found = sorted(
                str(f) for f in path.iterdir() if f.suffix in MANIFEST_SUFFIXES and f.is_file()
            )
            if not found:
                raise ObjectFileError(
                    f"{p}: no manifest files (*.yaml, *.yml, *.json) in this directory"
                )
            out += found
        elif not path.exists():
            raise NotFoundError(f"{p} does not exist", hint="pass -f FILE, -f DIR or -f -")
        else:
            out.append(p)
    return out


def _raw_documents(text: str, source: str) -> list[tuple[int, Any]]:
    """(line, data) of every non-empty YAML document; a YAML error names the file and line."""
    out: list[tuple[int, Any]] = []
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses characters YAML does not allow
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            line = node.start_mark.line + 1
            data = loader.construct_document(node)
            if data is not None:
                out.append((line, data))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e)
        raise ObjectFileError(
            f"{at}: not valid YAML: {problem}",
            hint="check the indentation and quoting there (documents are separated by ---)",
        ) from e
    except RecursionError:  # the YAML composer recurses once per level of nesting
        raise ObjectFileError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return out


def parse_documents(text: str, source: str) -> list[Document]:
    """Every object of a (multi-document) YAML or JSON text, `kind: List` expanded; each
    checked for apiVersion, kind and metadata.name. Errors name the file and line."""
    docs: list[Document] = []
    for line, data in _raw_documents(text, source):
        docs += _expand(data, source, line)
    return docs


def _expand(data: Any, source: str, line: int) -> list[Document]:
    where = f"{source}:{line}"
    if not isinstance(data, dict):
        raise ObjectFileError(
            f"{where}: a document must be a mapping (a Kubernetes object), not "
            f"{type(data).__name__}",
            hint="each document needs apiVersion, kind and metadata.name",
        )
    if data.get("kind") == "List" and isinstance(data.get("items"), list):
        out: list[Document] = []
        for item in data["items"]:
            out += _expand(item, source, line)
        return out
    for key in ("apiVersion", "kind"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ObjectFileError(
                f"{where}: the document has no {key}",
                hint="each document needs apiVersion, kind and metadata.name "
                "(e.g. apiVersion: apps/v1, kind: Deployment)",
            )
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ObjectFileError(
            f"{where}: {data['kind']} has no metadata.name",
            hint="server-side apply needs a name (generateName is not enough)",
        )
    return [Document(body=data, source=source, line=line)]


def read_documents(paths: Sequence[str | Path], *, stdin: Any = None) -> list[Document]:
    """Every object of every file (FILE, DIR or - for stdin); an empty input is an error."""
    import sys

    docs: list[Document] = []
    for f in manifest_files(paths):
        if f == "-":
            text = (stdin or sys.stdin).read()
        else:
            try:
                text = Path(f).read_text()
            except UnicodeDecodeError as e:
                raise ObjectFileError(f"{f}: not a text file ({e.reason})") from e
        docs += parse_documents(text, f)
    if not docs:
        raise ObjectFileError(
            f"no objects in {', '.join(str(p) for p in paths)}",
            hint="the file is empty or holds only comments; write at least one object",
        )
    return docs


def load_manifest(path: Path) -> dict[str, Any]:
    """The one Pod of a manifest file (`floxk run pod -f`)."""
    files = manifest_files([path])
    if len(files) != 1 or files[0] == "-":
        raise ObjectFileError(f"{path}: expected exactly one Pod manifest file")
    f = files[0]
    try:
        raw = _raw_documents(Path(f).read_text(), f)
    except UnicodeDecodeError as e:
        raise ObjectFileError(f"{f}: not a text file ({e.reason})") from e
    if len(raw) != 1 or not isinstance(raw[0][1], dict) or raw[0][1].get("kind") != "Pod":
        raise ObjectFileError(
            f"{path}: expected exactly one Pod",
            hint="floxk run pod takes one Pod manifest; floxk apply -f takes any workload",
        )
    line, data = raw[0]
    data.setdefault("apiVersion", "v1")
    return _expand(data, f, line)[0].body


def pod_template(body: dict[str, Any]) -> dict[str, Any] | None:
    """The pod (template) inside a pod-bearing object, None for any other kind."""
    path = POD_TEMPLATES.get(body.get("kind", ""))
    if path is None:
        return None
    node = body
    for key in path:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = node[key] = {}
        node = nxt
    return node


def fill_template(
    template: dict[str, Any], *, what: str, env_ref: str | None, override: bool = False
) -> bool:
    """Fill a pod (template) in place for the flox runtime: annotation (env_ref where none
    is set; always with override), runtimeClassName flox, the stub image where a container
    has none. Every flox.dev/* annotation is checked with the node's own parser.

    Returns False, touching nothing, for an image workload: no environment from anywhere,
    every container with an image and no runtimeClassName, or another runtimeClassName."""
    from shim.core.annotations import parse_annotations

    meta = template.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ObjectFileError(f"{what}: metadata is not a mapping")
    spec = template.get("spec")
    if not isinstance(spec, dict):
        raise ObjectFileError(f"{what}: has no pod spec", hint="a pod needs spec.containers")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise ObjectFileError(
            f"{what} has no spec.containers", hint="give the pod (template) spec.containers"
        )
    inits = spec.get("initContainers") or []
    if not isinstance(inits, list):
        raise ObjectFileError(f"{what}: spec.initContainers must be a list")
    every = containers + inits
    for key, items in (("containers", containers), ("initContainers", inits)):
        for i, c in enumerate(items):
            if not isinstance(c, dict):
                raise ObjectFileError(f"{what}: spec.{key}[{i}] must be a mapping")
            if c.get("image") not in (None, "") and not isinstance(c["image"], str):
                raise ObjectFileError(f"{what}: spec.{key}[{i}].image must be a string")
    runtime_class = spec.get("runtimeClassName")
    if runtime_class == "":
        runtime_class = None
    if runtime_class not in (None, kube.RUNTIME_CLASS):
        return False  # the author chose another runtime: as written
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ObjectFileError(f"{what}: metadata.annotations is not a mapping")
    ref = annotations.get(ENV_ANNOTATION)
    if env_ref and (override or not ref):
        ref = env_ref
    if not ref:
        if runtime_class is None and all(c.get("image") for c in every):
            return False  # an ordinary image workload
        raise FloxkError(
            f"{what} names no environment",
            hint=f"pass --env OWNER/NAME[:GEN] or set the {ENV_ANNOTATION} annotation",
        )
    annotations = {**annotations, ENV_ANNOTATION: ref}
    try:
        parse_annotations(annotations)  # a bad value fails here, not on the node
    except FloxkError as e:
        raise FloxkError(f"{what}: {e.message}", hint=e.hint) from e
    hub.parse_ref(ref)
    template["metadata"] = meta
    meta["annotations"] = annotations
    spec["runtimeClassName"] = kube.RUNTIME_CLASS
    for c in every:
        if not c.get("image"):
            c["image"] = STUB_IMAGE
    return True


def is_flox(body: dict[str, Any]) -> bool:
    """A pod-bearing object whose pod (template) runs on the flox runtime with an environment."""
    template = pod_template(copy.deepcopy(body))
    if template is None:
        return False
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    runtime = (template.get("spec") or {}).get("runtimeClassName")
    return runtime == kube.RUNTIME_CLASS and bool(annotations.get(ENV_ANNOTATION))


def fill_pod(manifest: dict[str, Any], *, env_ref: str | None = None) -> dict[str, Any]:
    """A copy of a Pod manifest with runtimeClassName, stub images and the environment filled
    in (`floxk run pod`: --env replaces the manifest's ref; an environment is required)."""
    pod = copy.deepcopy(manifest)
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    if pod.get("metadata") in (None, ""):
        pod["metadata"] = {}
    meta = pod["metadata"]
    if not isinstance(meta, dict):
        raise ObjectFileError("the pod's metadata must be a mapping")
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ObjectFileError("the pod has no metadata.name (a string)")
    if meta.get("namespace") in (None, ""):
        meta["namespace"] = "default"
    elif not isinstance(meta["namespace"], str):
        raise ObjectFileError(f"pod {meta['name']}: metadata.namespace must be a string")
    what = f"pod {meta['name']}"
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ObjectFileError(f"{what}: metadata.annotations is not a mapping")
    if not (env_ref or annotations.get(ENV_ANNOTATION)):
        raise FloxkError(
            f"{what} names no environment",
            hint=f"pass --env OWNER/NAME[:GEN] or set the {ENV_ANNOTATION} annotation",
        )
    if not fill_template(pod, what=what, env_ref=env_ref, override=True):
        raise ObjectFileError(
            f"{what}: spec.runtimeClassName is {pod['spec'].get('runtimeClassName')!r}, not"
            f" {kube.RUNTIME_CLASS}",
            hint="floxk run pod runs flox pods; use floxk apply -f for other workloads",
        )
    return pod


def fill_object(body: dict[str, Any], *, env_ref: str | None = None) -> dict[str, Any]:
    """A copy of any object, its pod template filled in (`floxk apply`: --env only where the
    template names no environment); other kinds are returned as written."""
    out = copy.deepcopy(body)
    template = pod_template(out)
    if template is not None:
        meta = out["metadata"]
        what = (
            f"{out['kind']} {meta.get('namespace', '') and meta['namespace'] + '/'}{meta['name']}"
        )
        fill_template(template, what=what, env_ref=env_ref)
    return out


def pod_from_command(name: str, *, env_ref: str, command: list[str]) -> dict[str, Any]:
    """A run-to-completion pod running `command` in the environment (kubectl run's shape)."""
    if not command:
        raise FloxkError("no command given", hint="floxk run pod NAME --env REF -- CMD ARGS...")
    return fill_pod(
        {
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "floxk"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": name, "command": command}]},
        },
        env_ref=env_ref,
    )


def apply_pod(api, pod: dict[str, Any], *, replace: bool = False, create_namespace=True) -> None:
    """`floxk run pod`'s apply, on `floxk apply`'s core: its namespace created when missing,
    dry-run first, server-side applied; with replace, a pod of that name is deleted first."""
    from floxk._cluster import apply as applying

    name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
    doc = Document(body=pod, source=f"pod {ns}/{name}", line=1)
    if replace:
        applying.delete(api, [doc], grace_period=0, timeout=60)
    planned = applying.plan(api, [doc])
    try:
        applying.check(api, planned, create_namespaces=create_namespace, force=True)
    except kube.KubeError as e:
        if e.status == 422 and ("may not change" in e.message or "immutable" in e.message):
            raise FloxkError(
                f"pod {ns}/{name} exists with another spec (pods are mostly immutable)",
                hint="add --replace to delete and recreate it",
            ) from e
        raise
    applying.apply(api, planned, create_namespaces=create_namespace, force=True)


@dataclass
class PodState:
    phase: str
    summary: str  # one line for a status display
    run_to_completion: bool
    started: bool = False  # some container ran (logs exist)
    done: bool = False  # nothing more will happen without a change
    failed: bool = False
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    containers: list[dict[str, Any]] = field(default_factory=list)


def pod_state(pod) -> PodState:
    """Where a pod (a V1Pod) stands, reduced to what `floxk run pod` acts on."""
    restart = pod.spec.restart_policy or "Always"
    phase = pod.status.phase or "Pending"
    state = PodState(phase=phase, summary=phase, run_to_completion=restart != "Always")
    for s in pod.status.container_statuses or []:
        entry: dict[str, Any] = {"name": s.name, "ready": bool(s.ready)}
        if s.state.waiting:
            entry.update(state="waiting", reason=s.state.waiting.reason)
            if s.state.waiting.reason in FATAL_WAITING:
                state.done = state.failed = True
                state.reason, state.message = s.state.waiting.reason, s.state.waiting.message
        elif s.state.running:
            entry.update(state="running")
            state.started = True
        elif s.state.terminated:
            t = s.state.terminated
            entry.update(state="terminated", reason=t.reason, exit_code=t.exit_code)
            if t.reason in NEVER_STARTED:
                state.reason, state.message = t.reason, t.message
            else:
                state.started = True
            if state.exit_code in (None, 0):
                state.exit_code = t.exit_code
            if t.exit_code and not state.reason:
                state.reason, state.message = t.reason, t.message
        state.containers.append(entry)
    if phase in ("Succeeded", "Failed"):
        state.done = True
        state.failed = phase == "Failed"
    elif (
        not state.run_to_completion
        and phase == "Running"
        and all(c.get("ready") for c in state.containers)
    ):
        state.done = True
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.message:
            state.reason, state.message = cond.reason, cond.message
    detail = ", ".join(
        f"{c['name']}: {c['state']}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in state.containers
    )
    state.summary = f"{phase}" + (f" - {detail}" if detail else "")
    if state.reason and not detail:
        state.summary += f" - {state.reason}"
    return state


def read_state(api, name: str, ns: str) -> PodState:
    from kubernetes import client

    with kube.calls(f"reading pod {ns}/{name}"):
        return pod_state(client.CoreV1Api(api).read_namespaced_pod(name, ns))


def follow(
    api,
    name: str,
    ns: str,
    *,
    timeout: float,
    until_started: bool = False,
    on_change: Callable[[PodState], None] | None = None,
) -> PodState:
    """Watch the pod until it is done (or, with until_started, until a container ran)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    last = state = None
    with kube.calls(f"watching pod {ns}/{name}"):
        for pods in kube.watching(
            core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}", timeout=timeout
        ):
            if name not in pods:
                if state is None:
                    continue  # not created yet
                raise FloxkError(
                    f"pod {ns}/{name} was deleted while it was followed",
                    hint="something else deleted it: `kubectl get events -n " + ns + "`",
                )
            state = pod_state(pods[name])
            if on_change and state.summary != last:
                on_change(state)
                last = state.summary
            if state.done or (until_started and state.started):
                return state
    raise kube.WaitTimeout(
        f"pod {ns}/{name} not done after {timeout:.0f} s ({state.summary if state else 'not seen'})",
        hint=f"kubectl describe pod -n {ns} {name}; raise --timeout",
    )


def events(api, name: str, ns: str) -> list[dict[str, Any]]:
    """This pod's events, oldest first (the runtime's error messages land here). Only the
    current pod's: a pod of the same name deleted by --replace left its own behind."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    with kube.calls(f"reading the events of pod {ns}/{name}"):
        uid = core.read_namespaced_pod(name, ns).metadata.uid
        selector = f"involvedObject.kind=Pod,involvedObject.name={name},involvedObject.uid={uid}"
        items = core.list_namespaced_event(ns, field_selector=selector).items
    items.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return [
        {"type": e.type, "reason": e.reason, "message": (e.message or "").strip(), "count": e.count}
        for e in items
    ]


def logs(
    api, name: str, ns: str, container: str | None = None, *, opening: Callable | None = None
) -> Iterator[str]:
    """Follow a container's log line by line until it ends. `opening` wraps the API call
    (Streams.opening: so a stop can end a follow blocked in a read)."""
    from kubernetes import client, watch

    read = client.CoreV1Api(api).read_namespaced_pod_log
    with kube.calls(f"reading the log of pod {ns}/{name}"):
        yield from watch.Watch().stream(
            opening(read) if opening else read, name=name, namespace=ns, container=container
        )
