"""Talking to a cluster through the kubernetes client: apply, labels, recorded spec, waits.

Everything floxk creates is server-side applied with field manager "floxk", so a second
`floxk up` re-applies the same objects without conflicts and changes nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from floxk._cluster.constants import FIELD_MANAGER, FLOX_NODE_LABEL, RUNTIME_CLASS
from floxk._exit import ExitStatus
from shim.core.errors import FloxkError, NotFoundError

STATE_NAMESPACE = "kube-system"
STATE_CONFIGMAP = "floxk-cluster"


NO_RUNTIME_HINT = (
    "this cluster has no flox runtime: `floxk up` makes a kind cluster with it, "
    "`floxk shim deploy` installs it on an existing one (docs/install.md)"
)


class WaitTimeout(FloxkError):
    """Waiting for the cluster took longer than allowed."""

    exit_code = ExitStatus.TIMEOUT


class KubeError(FloxkError):
    """The Kubernetes API refused a request, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.reason = reason  # the Status reason: NotFound, AlreadyExists, Conflict, Invalid...
        self.exit_code = ExitStatus.NOT_FOUND if status == 404 else ExitStatus.FAILURE


def _status_of(e) -> tuple[str, str | None, dict[str, Any]]:
    """(message, reason, details) of an ApiException's Status body (or its HTTP reason)."""
    body = getattr(e, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if body:
        try:
            data = json.loads(body)
        except (TypeError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("message"):
            return data["message"], data.get("reason"), data.get("details") or {}
        if isinstance(body, str) and body.strip() and len(body) < 500:
            return body.strip(), None, {}
    return f"{e.status} {e.reason or ''}".strip(), None, {}


def _api_hint(status: int, message: str, reason: str | None, details: dict[str, Any]) -> str:
    if status == 401:
        return (
            "the kubeconfig's credentials were refused (expired, or for another cluster): "
            "get fresh ones (`kind export kubeconfig --name NAME` for a kind cluster, else log "
            "in again); `kubectl config view --minify` shows the user in use"
        )
    if status == 403 and "RuntimeClass" in message and "not found" in message:
        return NO_RUNTIME_HINT
    if status == 403 and "error looking up service account" in message:
        return (
            "the namespace's ServiceAccount does not exist (yet): kube-controller-manager "
            "creates `default` in a new namespace within seconds; run the command again, or "
            "create the ServiceAccount the pod names"
        )
    if status == 403:
        return (
            "the kubeconfig's user may not do this: `kubectl auth can-i --list -n NAMESPACE` "
            "shows what it may; ask for a Role/RoleBinding"
        )
    if status == 404:
        if details.get("kind") == "namespaces":
            return (
                f"create namespace {details.get('name', '')} first (`kubectl create namespace`); "
                "floxk apply creates the namespaces a file names unless --no-create-namespace"
            )
        return "check the name, namespace and context (`kubectl get KIND -n NAMESPACE`)"
    if status == 409:
        if reason == "AlreadyExists":
            return "it exists already: delete it first, or apply instead of create"
        if "conflict" in message.lower() and "apply" in message.lower():
            return (
                "another field manager owns these fields: change them where they were set, "
                "drop them from the file, or pass --force-conflicts to take them over"
            )
        return "the object changed meanwhile: run the command again"
    if status == 422:
        if "immutable" in message:
            return (
                "that field cannot change on an existing object: delete it "
                "(`floxk delete -f FILE`) and apply again"
            )
        return "fix the field the server names (`kubectl explain KIND.FIELD` describes it)"
    if status == 400:
        return "the server could not read the object: check its fields (`kubectl explain KIND`)"
    if status == 500 and "typed patch object" in message:
        # Server-side apply's schema check: a value of the wrong type (YAML reads an
        # unquoted true, 1.0 or null as a boolean, number or nothing).
        return (
            "a field has a value of the wrong type (the path and type are in the message): "
            "quote strings YAML would read otherwise, e.g. command: ['true']"
        )
    if status == 429 or status >= 500:
        return "the API server is overloaded or failing: retry; `kubectl get --raw /readyz?verbose`"
    return "see the server's message above"


def translate(e: BaseException, what: str) -> FloxkError | None:
    """The FloxkError (message and hint) for a failure of the kubernetes client or its HTTP
    layer while doing `what`; None when e is neither."""
    if isinstance(e, FloxkError):
        return e
    module = type(e).__module__ or ""
    if not module.startswith(("kubernetes", "urllib3")) and not isinstance(e, OSError):
        return None
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    if isinstance(e, ApiException) and isinstance(getattr(e, "status", None), int) and e.status:
        message, reason, details = _status_of(e)
        return KubeError(
            f"{what}: {message}",
            hint=_api_hint(e.status, message, reason, details),
            status=e.status,
            reason=reason,
        )
    if isinstance(e, ConfigException):
        return KubeError(
            f"{what}: the kubeconfig cannot be used: {e}",
            hint="check KUBECONFIG / ~/.kube/config and the context (`kubectl config "
            "get-contexts`); `floxk up` writes a kind cluster's context",
        )
    import urllib3.exceptions as u3

    if isinstance(e, u3.MaxRetryError):
        cause = e.reason
        pool = getattr(e, "pool", None)
        where = f"{pool.scheme}://{pool.host}:{pool.port}" if pool else e.url
        if isinstance(cause, u3.SSLError):
            return KubeError(
                f"{what}: TLS with the Kubernetes API at {where} failed: {cause}",
                hint="the kubeconfig's certificates do not match the cluster (recreated?): "
                "`kind export kubeconfig --name NAME` for a kind cluster",
            )
        detail = str(cause)
        if "refused" in detail.lower():
            detail = "connection refused"
        return KubeError(
            f"{what}: cannot reach the Kubernetes API at {where}: {detail}",
            hint="is the cluster running? `floxk status` lists floxk's clusters, `floxk up` "
            "starts one; `kubectl config current-context` shows which one is meant",
        )
    if isinstance(e, u3.HTTPError | OSError):
        return KubeError(
            f"{what}: talking to the Kubernetes API failed: {e}",
            hint="is the cluster running and reachable? `kubectl cluster-info`",
        )
    return None


@contextmanager
def calls(what: str) -> Iterator[None]:
    """Kubernetes client failures inside become a FloxkError naming `what` (no traceback)."""
    try:
        yield
    except FloxkError:
        raise
    except Exception as e:
        err = translate(e, what)
        if err is None:
            raise
        raise err from e


def api_client(
    context: str | None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    hint: str = "create the cluster with `floxk up` (or pass --name of an existing one)",
):
    """The one way floxk builds a kubernetes ApiClient: for a kubeconfig context (None or
    "": the current one) of config_file (default KUBECONFIG, else ~/.kube/config). A
    context that is not there is a NotFoundError with `hint`; one whose credentials cannot
    be loaded a KubeError."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    config_file = os.fspath(config_file) if config_file else None
    try:
        return config.new_client_from_config(
            config_file=config_file or _kubeconfig_file(), context=context or None
        )
    except (ConfigException, FileNotFoundError) as e:
        known = _context_names(config_file)
        if context and context in known or not context and known:
            # The context is there; its credentials are not (an exec plugin that fails, an
            # expired token or certificate file).
            raise KubeError(
                f"kubeconfig context {context or '(current)'!r} cannot be used: {e}",
                hint="its credentials could not be loaded: log in again, or for a kind "
                "cluster `kind export kubeconfig --name NAME`",
            ) from e
        raise NotFoundError(
            f"no kubeconfig context {context!r}: {e}" if context else f"no usable kubeconfig: {e}",
            hint=hint,
        ) from e


def _context_names(config_file: str | None = None) -> list[str]:
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        contexts, _ = config.list_kube_config_contexts(config_file or _kubeconfig_file())
    except (ConfigException, FileNotFoundError):
        return []
    return [c["name"] for c in contexts or []]


def current_context() -> str | None:
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        _, active = config.list_kube_config_contexts(_kubeconfig_file())
    except (ConfigException, FileNotFoundError):
        return None
    return active["name"] if active else None


def _kubeconfig_file() -> str | None:
    """KUBECONFIG as it is now (the client reads it once, at import), None: ~/.kube/config."""
    return os.environ.get("KUBECONFIG") or None


def context_namespace(context: str | None) -> str:
    """The namespace a kubeconfig context names (kubectl's default), else "default"."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        contexts, active = config.list_kube_config_contexts(_kubeconfig_file())
    except (ConfigException, FileNotFoundError):
        return "default"
    for c in contexts or []:
        if c.get("name") == (context or (active or {}).get("name")):
            return (c.get("context") or {}).get("namespace") or "default"
    return "default"


def dynamic(api):
    """A DynamicClient (discovery cached under floxk's cache dir, as kubectl caches it)."""
    import hashlib

    from kubernetes.dynamic import DynamicClient

    from floxk._cluster.spec import cache_dir

    host = api.configuration.host.encode()
    cache = cache_dir() / "kube" / f"discovery-{hashlib.sha256(host).hexdigest()[:16]}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with calls(f"discovering the API of {api.configuration.host}"):
        return DynamicClient(api, cache_file=str(cache))


def get_or_none(client, resource, name: str, namespace: str | None, *, what: str):
    """The object as the server has it (a DynamicClient's get), None when it does not
    exist; `what` names it in an error ("Deployment team/web")."""
    try:
        with calls(f"reading {what}"):
            return client.get(resource, name=name, namespace=namespace)
    except KubeError as e:
        if e.status == 404:
            return None
        raise


def resource_for(client, api_version: str, kind: str):
    """The API resource of apiVersion/kind, or a KubeError naming what the server lacks."""
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    try:
        with calls(f"looking up {kind} ({api_version})"):
            return client.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError as e:
        raise KubeError(
            f"the server does not know kind {kind!r} in apiVersion {api_version!r}",
            hint="check apiVersion and kind (`kubectl api-resources` lists what the server "
            "serves); a custom resource needs its CustomResourceDefinition applied first",
            status=404,
            reason="NotFound",
        ) from e


def apply(
    api,
    body: dict[str, Any],
    *,
    force: bool = True,
    dry_run: bool = False,
    client=None,
) -> dict[str, Any]:
    """Server-side apply one object (field manager floxk); returns it as the server has it.
    floxk's own objects are applied with force (floxk owns them); a user's files need not."""
    client = client or dynamic(api)
    resource = resource_for(client, body["apiVersion"], body["kind"])
    meta = body["metadata"]
    ns = meta.get("namespace") if resource.namespaced else None
    what = f"{'checking' if dry_run else 'applying'} {body['kind']} " + (
        f"{ns}/{meta['name']}" if ns else meta["name"]
    )
    with calls(what):
        result = client.server_side_apply(
            resource,
            body=body,
            namespace=ns,
            field_manager=FIELD_MANAGER,
            force_conflicts=force,
            dry_run="All" if dry_run else None,
        )
    return result.to_dict()


def runtime_class() -> dict[str, Any]:
    """RuntimeClass flox (handler flox), scheduling pods onto nodes labelled for it."""
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": RUNTIME_CLASS},
        "handler": RUNTIME_CLASS,
        "scheduling": {"nodeSelector": {FLOX_NODE_LABEL: "true"}},
    }


def label_nodes(api, names: list[str] | None = None) -> list[str]:
    """Label nodes (default: all) flox.dev/enabled=true; returns their names."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    nodes = [n.metadata.name for n in core.list_node().items]
    targets = [n for n in nodes if names is None or n in names]
    for name in targets:
        core.patch_node(name, {"metadata": {"labels": {FLOX_NODE_LABEL: "true"}}})
    return targets


def spec_configmap(spec_dict: dict[str, Any], digest: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": STATE_CONFIGMAP,
            "namespace": STATE_NAMESPACE,
            "annotations": {"floxk.dev/spec-digest": digest},
        },
        "data": {"spec.json": json.dumps(spec_dict, indent=2, sort_keys=True)},
    }


def recorded_spec_digest(api) -> str | None:
    """The spec digest `floxk up` recorded in this cluster, or None (not a floxk cluster)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map(STATE_CONFIGMAP, STATE_NAMESPACE)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return (cm.metadata.annotations or {}).get("floxk.dev/spec-digest")


def node_summaries(api) -> list[dict[str, Any]]:
    from kubernetes import client

    return [node_summary(n) for n in client.CoreV1Api(api).list_node().items]


def node_summary(n) -> dict[str, Any]:
    """What floxk shows of a node (a V1Node)."""
    ready = next((c.status for c in n.status.conditions or [] if c.type == "Ready"), "Unknown")
    return {
        "name": n.metadata.name,
        "ready": ready == "True",
        "flox_label": (n.metadata.labels or {}).get(FLOX_NODE_LABEL) == "true",
        "kubelet": n.status.node_info.kubelet_version,
        "container_runtime": n.status.node_info.container_runtime_version,
    }


def has_runtime_class(api) -> bool:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        rc = client.NodeV1Api(api).read_runtime_class(RUNTIME_CLASS)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return rc.handler == RUNTIME_CLASS


def watching(
    list_call: Callable[..., Any],
    *args: Any,
    timeout: float,
    resync: float | None = None,
    **selectors: Any,
) -> Iterator[dict[str, Any]]:
    """The one way floxk waits on a cluster: the objects a list call returns ({name:
    object}, one namespace or cluster-scoped), kept current by the kubernetes client's
    watch. Yields that map after the first list (always, even past the deadline), after
    every change, and with `resync` also at least every `resync` seconds (for conditions
    that look beyond these objects); returns when `timeout` seconds have passed. A waiter
    is a loop over it that returns when its condition holds, and says why after the loop:

        for pods in kube.watching(core.list_namespaced_pod, ns, timeout=60,
                                  field_selector=f"metadata.name={name}"):
            if name not in pods:
                return
        raise WaitTimeout(...)

    A watch the server expired (410 Gone) is picked up again from a fresh list."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout
    first = True
    while first or time.monotonic() < deadline:
        first = False
        listing = list_call(*args, **selectors)
        objects = {o.metadata.name: o for o in listing.items}
        version = listing.metadata.resource_version
        yield objects
        while (left := deadline - time.monotonic()) > 0:
            w = watch.Watch()
            seconds = min(left, resync) if resync else left
            try:
                for event in w.stream(
                    list_call,
                    *args,
                    resource_version=version,
                    timeout_seconds=max(1, round(seconds)),
                    **selectors,
                ):
                    obj = event["object"]
                    version = obj.metadata.resource_version
                    if event["type"] == "DELETED":
                        objects.pop(obj.metadata.name, None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        objects[obj.metadata.name] = obj
                    else:
                        continue
                    yield objects
            except ApiException as e:
                if e.status != 410:
                    raise
                break  # expired: list again
            finally:
                w.stop()
            if resync:
                yield objects


def wait_schedulable(api, *, timeout: float, progress: Callable[[str], None] | None = None) -> None:
    """Until a flox pod can be scheduled: every node Ready and labelled, RuntimeClass flox
    present, the default ServiceAccount created (pods are refused before it exists)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    say = progress or (lambda _m: None)
    core = client.CoreV1Api(api)
    last = ""
    problems: list[str] = []
    # The nodes are watched; RuntimeClass and ServiceAccount are read on every pass.
    for by_name in watching(core.list_node, timeout=timeout, resync=2):
        nodes = [node_summary(n) for n in by_name.values()]
        waiting = [n["name"] for n in nodes if not (n["ready"] and n["flox_label"])]
        problems = []
        if not nodes or waiting:
            problems.append(f"nodes not Ready: {', '.join(waiting) or 'none registered'}")
        if not has_runtime_class(api):
            problems.append("RuntimeClass flox missing")
        try:
            core.read_namespaced_service_account("default", "default")
        except ApiException:
            problems.append("default ServiceAccount not created yet")
        if not problems:
            return
        if problems[0] != last:
            say("waiting: " + "; ".join(problems))
            last = problems[0]
    raise WaitTimeout(
        f"cluster not ready for flox pods after {timeout:.0f} s: {'; '.join(problems)}",
        hint="raise --timeout, or look at `kubectl get nodes` and `floxk doctor`",
    )
