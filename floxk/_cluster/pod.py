"""`floxk run pod`: fill a pod in for the flox runtime, apply it, follow it to an outcome.

fill_pod and pod_from_command are pure; the rest talks to the cluster and returns data.
A flox pod needs runtimeClassName flox, an image on every container (the stub image) and
the flox.dev/environment annotation; whatever the author already wrote is kept.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from floxk._cluster import kube
from shim import hub
from shim.errors import FloxkError, NotFoundError

ENV_ANNOTATION = "flox.dev/environment"
STUB_IMAGE = "flox/empty:1.0.0"
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


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        docs = [
            d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d is not None
        ]
    except FileNotFoundError as e:
        raise NotFoundError(f"{path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise FloxkError(f"cannot read {path}: {e}") from e
    except yaml.YAMLError as e:
        raise FloxkError(f"{path}: not valid YAML: {e}") from e
    except RecursionError:  # the YAML composer recurses once per level of nesting
        raise FloxkError(f"{path}: not valid YAML: nested too deeply") from None
    if len(docs) != 1 or not isinstance(docs[0], dict) or docs[0].get("kind") != "Pod":
        raise FloxkError(
            f"{path}: expected exactly one Pod", hint="floxk run pod takes one Pod manifest"
        )
    return docs[0]


def fill_pod(manifest: dict[str, Any], *, env_ref: str | None = None) -> dict[str, Any]:
    """A copy of manifest with runtimeClassName, stub images and the environment filled in."""
    pod = copy.deepcopy(manifest)
    if pod.setdefault("apiVersion", "v1") != "v1":
        raise FloxkError(f"the pod's apiVersion is {pod['apiVersion']!r}; a Pod is v1")
    pod.setdefault("kind", "Pod")
    meta = _field(pod, "metadata", dict, "metadata", {})
    if not meta.get("name"):
        raise FloxkError("the pod has no metadata.name")
    _field(meta, "name", str, "metadata.name")
    _field(meta, "namespace", str, "metadata.namespace", "default")
    annotations = _field(meta, "annotations", dict, "metadata.annotations", {})
    if env_ref:
        annotations[ENV_ANNOTATION] = env_ref
    ref = annotations.get(ENV_ANNOTATION)
    if not ref:
        raise FloxkError(
            f"pod {meta['name']} names no environment",
            hint=f"pass --env OWNER/NAME[:GEN] or set the {ENV_ANNOTATION} annotation",
        )
    _field(annotations, ENV_ANNOTATION, str, f"metadata.annotations.{ENV_ANNOTATION}")
    hub.parse_ref(ref)  # a bad ref fails here, not on the node
    spec = _field(pod, "spec", dict, "spec", {})
    _field(spec, "runtimeClassName", str, "spec.runtimeClassName", kube.RUNTIME_CLASS)
    for key in ("containers", "initContainers"):
        items = spec.get(key) or []
        if not isinstance(items, list):
            raise FloxkError(f"the pod's spec.{key} must be a list, not {_kind(items)}")
        if key == "containers" and not items:
            raise FloxkError(f"pod {meta['name']} has no spec.containers")
        for i, c in enumerate(items):
            if not isinstance(c, dict):
                raise FloxkError(f"the pod's spec.{key}[{i}] must be a mapping, not {_kind(c)}")
            _field(c, "image", str, f"spec.{key}[{i}].image", STUB_IMAGE)
    return pod


def _field(parent: dict, key: str, want: type, name: str, default: Any = None) -> Any:
    """parent[key], set to `default` where missing, null or empty; FloxkError naming the
    field when it is not a `want` (what YAML can hold there is anything)."""
    if parent.get(key) in (None, ""):
        parent[key] = default
    if not isinstance(parent[key], want):
        what = {dict: "a mapping", list: "a list", str: "a string"}[want]
        raise FloxkError(f"the pod's {name} must be {what}, not {_kind(parent[key])}")
    return parent[key]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


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


def apply_pod(api, pod: dict[str, Any], *, replace: bool = False) -> None:
    """Server-side apply; with replace, delete an existing pod of that name first."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
    if replace:
        try:
            core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        except ApiException as e:
            if e.status != 404:
                raise
        _wait_gone(core, name, ns)
    try:
        kube.apply(api, pod)
    except ApiException as e:
        if e.status == 422:  # pod specs are (mostly) immutable
            raise FloxkError(
                f"pod {ns}/{name} exists with another spec (pods are mostly immutable)",
                hint="add --replace to delete and recreate it",
            ) from e
        raise


def _wait_gone(core, name: str, ns: str, timeout: float = 60) -> None:
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_pod(name, ns)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        time.sleep(0.5)


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
    """Poll the pod until it is done (or, with until_started, until a container ran)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        state = read_state(api, name, ns)
        if on_change and state.summary != last:
            on_change(state)
            last = state.summary
        if state.done or (until_started and state.started):
            return state
        if time.monotonic() > deadline:
            raise kube.WaitTimeout(
                f"pod {ns}/{name} not done after {timeout:.0f} s ({state.summary})",
                hint=f"kubectl describe pod -n {ns} {name}; raise --timeout",
            )
        time.sleep(1)


def events(api, name: str, ns: str) -> list[dict[str, Any]]:
    """This pod's events, oldest first (the runtime's error messages land here). Only the
    current pod's: a pod of the same name deleted by --replace left its own behind."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    uid = core.read_namespaced_pod(name, ns).metadata.uid
    selector = f"involvedObject.kind=Pod,involvedObject.name={name},involvedObject.uid={uid}"
    items = core.list_namespaced_event(ns, field_selector=selector).items
    items.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return [
        {"type": e.type, "reason": e.reason, "message": (e.message or "").strip(), "count": e.count}
        for e in items
    ]


def logs(api, name: str, ns: str, container: str | None = None) -> Iterator[str]:
    """Follow a container's log line by line until it ends."""
    from kubernetes import client, watch

    core = client.CoreV1Api(api)
    yield from watch.Watch().stream(
        core.read_namespaced_pod_log, name=name, namespace=ns, container=container
    )
