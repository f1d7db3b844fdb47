"""Applying a checked Plan: namespaces first, then every object in order, each reported
as created, configured or unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from floxk._cluster import kube
from floxk._cluster import pod as pods
from floxk._cluster.apply._plan import Plan, Planned, Progress, at_document
from shim.core.errors import FloxkError


@dataclass
class Applied(pods.ObjectRef):
    action: str  # created, configured, unchanged
    flox: bool = False


def apply(
    api,
    p: Plan,
    *,
    create_namespaces: bool = True,
    force: bool = False,
    client=None,
    progress: Progress | None = None,
) -> list[Applied]:
    """Namespaces first (the missing ones created, the files' own applied), then what
    check() could not dry-run because its namespace did not exist, then every other object
    in order. A failing dry run here leaves only the namespaces behind."""
    say = progress or (lambda _m: None)
    client = client or kube.dynamic(api)
    done: list[Applied] = []
    for ns in p.absent_namespaces:
        if ns in p.defined_namespaces or not create_namespaces:
            continue
        kube.apply(
            api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, force=True
        )
        done.append(Applied("Namespace", ns, None, "created"))
        say(f"namespace {ns} created")
    namespaces = [o for o in p.objects if o.kind == "Namespace"]
    rest = [o for o in p.objects if o.kind != "Namespace"]
    done += [_apply_one(api, client, o, force=force, say=say) for o in namespaces]
    pod_namespaces = {o.namespace for o in rest if o.kind == "Pod" and o.namespace}
    for ns in sorted(pod_namespaces & set(p.absent_namespaces)):
        # A new namespace refuses pods until its default ServiceAccount exists.
        wait_default_service_account(api, ns)
    for o in rest:
        if o.namespace in p.absent_namespaces:
            try:
                kube.apply(api, o.body, force=force, dry_run=True, client=client)
            except FloxkError as e:
                raise at_document(o.doc, e) from None
    done += [_apply_one(api, client, o, force=force, say=say) for o in rest]
    return done


def _apply_one(api, client, o: Planned, *, force: bool, say: Progress) -> Applied:
    before = _current(client, o)
    try:
        after = kube.apply(api, o.body, force=force, client=client)
    except FloxkError as e:
        raise at_document(o.doc, e) from None
    rv = (after.get("metadata") or {}).get("resourceVersion")
    action = "created" if before is None else "unchanged" if rv == before else "configured"
    say(f"{o.identity} {action}")
    return Applied(o.kind, o.name, o.namespace, action, o.flox)


def _current(client, o: Planned) -> str | None:
    """The object's resourceVersion on the server, None when it does not exist."""
    resource = kube.resource_for(client, o.body["apiVersion"], o.kind)
    obj = kube.get_or_none(client, resource, o.name, o.namespace, what=o.identity)
    return None if obj is None else obj.metadata.resourceVersion


def wait_default_service_account(api, ns: str, timeout: float = 60) -> None:
    """Pods are refused in a namespace until its default ServiceAccount exists."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    with kube.calls(f"waiting for the default ServiceAccount of {ns}"):
        for accounts in kube.watching(
            core.list_namespaced_service_account,
            ns,
            field_selector="metadata.name=default",
            timeout=timeout,
        ):
            if "default" in accounts:
                return
    raise kube.WaitTimeout(
        f"namespace {ns} has no default ServiceAccount after {timeout:.0f} s",
        hint="kube-controller-manager creates it: `kubectl get pods -n kube-system`",
    )
