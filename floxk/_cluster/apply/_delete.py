"""Deleting the objects of the files, dependents first, and waiting until they are gone."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from floxk._cluster import kube
from floxk._cluster import pod as pods
from floxk._cluster.apply._plan import Progress, at_document, namespace_of, order
from floxk._cluster.pod import Document
from shim.core.errors import FloxkError


@dataclass
class Deleted(pods.ObjectRef):
    result: str  # deleted, not found
    gone: bool = False


def delete(
    api,
    docs: list[Document],
    *,
    namespace: str | None = None,
    default_namespace: str = "default",
    wait: bool = True,
    timeout: float = 300,
    grace_period: int | None = None,
    progress: Progress | None = None,
) -> list[Deleted]:
    """Delete every object of the files, dependents first (reverse dependency order,
    foreground propagation: a workload is gone once its pods are); absent objects are
    fine (rm -f). With wait, until every object is gone (WaitTimeout after timeout)."""
    say = progress or (lambda _m: None)
    client = kube.dynamic(api)
    targets = []
    for doc in docs:
        body = doc.body
        try:
            resource = kube.resource_for(client, body["apiVersion"], body["kind"])
        except FloxkError as e:
            raise at_document(doc, e) from None
        ns = namespace_of(doc, body, namespace, default_namespace) if resource.namespaced else None
        targets.append((resource, body["kind"], body["metadata"]["name"], ns))
    targets = list(reversed(order(targets, lambda t: t[1])))
    out: list[Deleted] = []
    options: dict[str, Any] = {"propagationPolicy": "Foreground"}
    if grace_period is not None:
        options["gracePeriodSeconds"] = grace_period
    for resource, kind, name, ns in targets:
        entry = Deleted(kind, name, ns, "deleted")
        try:
            with kube.calls(f"deleting {entry.identity}"):
                client.delete(
                    resource,
                    name=name,
                    namespace=ns,
                    body=options,
                )
        except kube.KubeError as e:
            if e.status != 404:
                raise
            entry.result, entry.gone = "not found", True
        out.append(entry)
    if wait:
        deadline = time.monotonic() + timeout
        for (resource, _kind, _name, _ns), entry in zip(targets, out, strict=True):
            if not entry.gone:
                _wait_gone(client, resource, entry, deadline)
                say(f"{entry.identity} gone")
    return out


def _wait_gone(client, resource, entry: Deleted, deadline: float) -> None:
    """Until the object is gone: a GET, then a watch from its resourceVersion for DELETED."""
    from kubernetes import watch

    while True:
        obj = kube.get_or_none(client, resource, entry.name, entry.namespace, what=entry.identity)
        if obj is None:
            entry.gone = True
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise kube.WaitTimeout(
                f"{entry.identity} is still there (finalizers or terminating pods)",
                hint="raise --timeout; `kubectl get "
                f"{entry.kind.lower()} {entry.name} -o yaml` shows its finalizers",
            )
        w = watch.Watch()
        with kube.calls(f"watching {entry.identity}"):
            for ev in client.watch(
                resource,
                namespace=entry.namespace,
                name=entry.name,
                resource_version=obj.metadata.resourceVersion,
                timeout=max(1, int(min(remaining, 30))),
                watcher=w,
            ):
                if ev["type"] == "DELETED":
                    w.stop()
                    entry.gone = True
                    return
