"""Planning: fill every document, resolve its kind on the server, set namespaces, sort
in dependency order (plan); dry-run every object on the server before anything changes
(check). Nothing here changes the cluster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from floxk._cluster import kube
from floxk._cluster import pod as pods
from floxk._cluster.pod import Document, ObjectFileError
from shim.core.errors import FloxkError

# Dependency order (Helm's install order, abridged): namespaces, then policy, config and
# RBAC, then services, then workloads; anything else (Ingress, custom resources) last.
ORDER = [
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "PriorityClass",
    "RuntimeClass",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
]
_RANK = {kind: i for i, kind in enumerate(ORDER)}
WORKLOADS = tuple(pods.POD_TEMPLATES)
Progress = Callable[[str], None]


def order(objects: list[Any], kind_of: Callable[[Any], str]) -> list[Any]:
    """Dependency order; objects of one kind (and unknown kinds) keep the files' order."""
    return sorted(objects, key=lambda o: _RANK.get(kind_of(o), len(ORDER)))


@dataclass
class Planned(pods.Named):
    doc: Document
    body: dict[str, Any]  # filled in, namespace set
    namespaced: bool
    flox: bool  # a pod template filled in for the flox runtime

    @property
    def namespace(self) -> str | None:
        return self.body["metadata"].get("namespace") if self.namespaced else None


@dataclass
class Plan:
    objects: list[Planned]
    absent_namespaces: list[str]  # named by some object, not on the server (yet)
    defined_namespaces: list[str]  # Namespace objects of the files


def at_document(doc: Document, e: FloxkError) -> FloxkError:
    """The same error, its message prefixed with the document's file and line."""
    e.message = f"{doc.where}: {e.message}"
    e.args = (e.message,)
    return e


def fill(docs: list[Document], *, env_ref: str | None) -> list[tuple[Document, dict, bool]]:
    """Every document filled in (pure): (document, body, is a flox workload)."""
    out = []
    for doc in docs:
        try:
            body = pods.fill_object(doc.body, env_ref=env_ref)
        except FloxkError as e:
            raise at_document(doc, e) from None
        flox = pods.is_flox(body)
        out.append((doc, body, flox))
    return out


def plan(
    api,
    docs: list[Document],
    *,
    env_ref: str | None = None,
    namespace: str | None = None,
    default_namespace: str = "default",
    client=None,
) -> Plan:
    """Fill, resolve each kind on the server, set namespaces (-n like kubectl: a document
    naming another namespace is an error), sort; nothing is changed on the server."""
    client = client or kube.dynamic(api)
    planned = []
    for doc, body, flox in fill(docs, env_ref=env_ref):
        try:
            resource = kube.resource_for(client, body["apiVersion"], body["kind"])
        except FloxkError as e:
            raise at_document(doc, e) from None
        if resource.namespaced:
            body["metadata"]["namespace"] = namespace_of(doc, body, namespace, default_namespace)
        planned.append(Planned(doc=doc, body=body, namespaced=resource.namespaced, flox=flox))
    planned = order(planned, lambda p: p.kind)
    seen = set()
    for p in planned:
        group = p.body["apiVersion"].rpartition("/")[0]
        ident = (group, p.kind, p.namespace, p.name)
        if ident in seen:
            raise ObjectFileError(
                f"{p.doc.where}: {p.identity} appears twice in the files",
                hint="keep one document per object",
            )
        seen.add(ident)
    named = sorted({p.namespace for p in planned if p.namespace})
    defined = [p.name for p in planned if p.kind == "Namespace"]
    absent = [ns for ns in named if not namespace_exists(api, ns)]
    return Plan(objects=planned, absent_namespaces=absent, defined_namespaces=defined)


def namespace_of(doc: Document, body: dict, namespace: str | None, default: str) -> str:
    """A namespaced object's namespace: its own, else -n, else the context's (-n like
    kubectl: a document naming another namespace is an error)."""
    own = body["metadata"].get("namespace")
    if namespace and own and own != namespace:
        raise ObjectFileError(
            f"{doc.where}: {body['kind']} {body['metadata']['name']} is in namespace {own!r}, "
            f"not {namespace!r} (-n)",
            hint=f"drop -n, or pass -n {own}",
        )
    return own or namespace or default


def namespace_exists(api, name: str) -> bool:
    """Whether the namespace exists; a user who may not read namespaces (namespaced RBAC
    only) is assumed to work in existing ones: the dry run says otherwise."""
    from kubernetes import client

    try:
        with kube.calls(f"reading namespace {name}"):
            client.CoreV1Api(api).read_namespace(name)
    except kube.KubeError as e:
        if e.status == 404:
            return False
        if e.status == 403:
            return True
        raise
    return True


def check(api, p: Plan, *, create_namespaces: bool, force: bool, client=None) -> None:
    """Every object dry-run on the server (schema, immutable fields, admission, conflicts)
    before anything is applied; the cluster has the flox runtime if a workload needs it.
    Objects in a namespace that does not exist yet are dry-run by apply() once it does."""
    client = client or kube.dynamic(api)
    missing = [ns for ns in p.absent_namespaces if ns not in p.defined_namespaces]
    if missing and not create_namespaces:
        raise kube.KubeError(
            f"namespace {', '.join(missing)} does not exist (--no-create-namespace)",
            hint="create it (`kubectl create namespace NAME`), add a Namespace document, "
            "or drop --no-create-namespace",
            status=404,
            reason="NotFound",
        )
    flox = [o for o in p.objects if o.flox]
    if flox and not any(
        o.kind == "RuntimeClass" and o.name == kube.RUNTIME_CLASS for o in p.objects
    ):
        with kube.calls("reading RuntimeClass flox"):
            present = kube.has_runtime_class(api)
        if not present:
            raise kube.KubeError(
                f"{flox[0].doc.where}: {flox[0].identity} runs on the flox runtime, but the "
                "cluster has no RuntimeClass flox",
                hint=kube.NO_RUNTIME_HINT,
            )
    for o in p.objects:
        if o.namespace in p.absent_namespaces:
            continue
        try:
            kube.apply(api, o.body, force=force, dry_run=True, client=client)
        except FloxkError as e:
            raise at_document(o.doc, e) from None
