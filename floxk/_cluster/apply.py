"""`floxk apply` / `floxk delete`: any workload, multi-document files, followed to an outcome.

plan() reads nothing but the server's discovery: it fills every pod-bearing object in the
way `floxk run pod` fills a Pod, gives namespaced objects their namespace and sorts them
in dependency order. check() dry-runs every object on the server (server-side apply with
dryRun=All) before apply() changes anything, so one bad document applies nothing. follow()
watches the workloads and their pods (the kubernetes client's watch, one stream each, fed
into one queue) until each has an outcome, like `kubectl rollout status` / `kubectl wait
--for=condition=complete`. delete() is the inverse of apply().
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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


def _at(doc: Document, e: FloxkError) -> FloxkError:
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
            raise _at(doc, e) from None
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
            raise _at(doc, e) from None
        if resource.namespaced:
            body["metadata"]["namespace"] = _namespace_of(doc, body, namespace, default_namespace)
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


def _namespace_of(doc: Document, body: dict, namespace: str | None, default: str) -> str:
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
            raise _at(o.doc, e) from None


@dataclass
class Applied:
    kind: str
    name: str
    namespace: str | None
    action: str  # created, configured, unchanged
    flox: bool = False

    @property
    def identity(self) -> str:
        return pods.identity(self.kind, self.namespace, self.name)


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
                raise _at(o.doc, e) from None
    done += [_apply_one(api, client, o, force=force, say=say) for o in rest]
    return done


def _apply_one(api, client, o: Planned, *, force: bool, say: Progress) -> Applied:
    before = _current(client, o)
    try:
        after = kube.apply(api, o.body, force=force, client=client)
    except FloxkError as e:
        raise _at(o.doc, e) from None
    rv = (after.get("metadata") or {}).get("resourceVersion")
    action = "created" if before is None else "unchanged" if rv == before else "configured"
    say(f"{o.identity} {action}")
    return Applied(o.kind, o.name, o.namespace, action, o.flox)


def _current(client, o: Planned) -> str | None:
    """The object's resourceVersion on the server, None when it does not exist."""
    resource = kube.resource_for(client, o.body["apiVersion"], o.kind)
    try:
        with kube.calls(f"reading {o.identity}"):
            obj = client.get(resource, name=o.name, namespace=o.namespace)
    except kube.KubeError as e:
        if e.status == 404:
            return None
        raise
    return obj.metadata.resourceVersion


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


# --- following workloads ------------------------------------------------------------------


@dataclass
class WorkloadStatus:
    kind: str
    namespace: str
    name: str
    ready: str = "-"  # ready/desired
    phase: str = "waiting"
    done: bool = False  # reached its outcome: available, complete, scheduled
    failed: bool = False
    reason: str | None = None
    message: str | None = None
    pod: str | None = None  # the pod that shows why it failed
    exit_code: int | None = None

    @property
    def identity(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def settled(self) -> bool:
        return self.done or self.failed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FollowTimeout(kube.WaitTimeout):
    """Some workload reached no outcome in time; statuses says where each stands."""

    def __init__(self, message: str, *, hint: str, statuses: list[WorkloadStatus]) -> None:
        super().__init__(message, hint=hint)
        self.statuses = statuses


def pod_problem(pod, *, in_job: bool) -> pods.PodState | None:
    """The pod's state when it will not run without a change (the runtime refused it, a
    crash loop); None otherwise. A Job's crash loops and failed runs are the Job's retries:
    its Failed condition decides."""
    state = pods.pod_state(pod)
    if state.reason in pods.NEVER_STARTED:
        return state
    for c in pod.status.container_statuses or []:
        waiting = c.state.waiting if c.state else None
        if waiting and waiting.reason in pods.FATAL_WAITING:
            if in_job and waiting.reason == "CrashLoopBackOff":
                continue
            return state
    for c in pod.status.init_container_statuses or []:
        waiting = c.state.waiting if c.state else None
        terminated = c.state.terminated if c.state else None
        if (
            waiting
            and waiting.reason in pods.FATAL_WAITING
            and not (in_job and waiting.reason == "CrashLoopBackOff")
        ):
            state.reason, state.message = waiting.reason, waiting.message
            return state
        if terminated and terminated.reason in pods.NEVER_STARTED:
            state.reason, state.message = terminated.reason, terminated.message
            return state
    return None


def _owned_by(pod, uid: str | None) -> bool:
    return bool(uid) and any(o.uid == uid for o in pod.metadata.owner_references or [])


def _live(pod) -> bool:
    return pod.metadata.deletion_timestamp is None


def _fail_from(status: WorkloadStatus, pods_: list, *, in_job: bool) -> bool:
    for p in pods_:
        state = pod_problem(p, in_job=in_job)
        if state is not None:
            status.failed = True
            status.pod = p.metadata.name
            status.reason = state.reason or state.phase
            status.message = state.message
            status.phase = f"failed: pod {p.metadata.name}: {status.reason}"
            return True
    return False


def _waiting_detail(pods_: list) -> str:
    """What the first not-ready pod waits for (ContainerCreating, Unschedulable, ...)."""
    for p in pods_:
        state = pods.pod_state(p)
        if state.phase != "Running" or not all(c.get("ready") for c in state.containers):
            return f" ({p.metadata.name}: {state.summary})"
    return ""


def _status_of(kind: str, obj) -> WorkloadStatus:
    return WorkloadStatus(kind, obj.metadata.namespace, obj.metadata.name)


def _controller_behind(obj) -> bool:
    """The controller has not yet seen the object's latest spec."""
    return (obj.metadata.generation or 0) > (obj.status.observed_generation or 0)


def _replicas(obj) -> int:
    """spec.replicas, which defaults to 1."""
    return 1 if obj.spec.replicas is None else obj.spec.replicas


def _owned_pods(all_pods: list, owner) -> list:
    return [p for p in all_pods if _live(p) and _owned_by(p, owner.metadata.uid)]


def _in_progress(s: WorkloadStatus, mine: list, phase: str, *, in_job: bool = False):
    """Failed when one of its pods will not run; else the phase and what a pod waits for."""
    if not _fail_from(s, mine, in_job=in_job):
        s.phase = phase + _waiting_detail(mine)
    return s


def _condition(obj, type_: str):
    return next(
        (c for c in (obj.status.conditions or []) if c.type == type_ and c.status == "True"),
        None,
    )


def deployment_status(dep, replica_sets: list, all_pods: list) -> WorkloadStatus:
    s = _status_of("Deployment", dep)
    st = dep.status
    desired = _replicas(dep)
    s.ready = f"{st.ready_replicas or 0}/{desired}"
    revision = (dep.metadata.annotations or {}).get("deployment.kubernetes.io/revision")
    current = [
        rs
        for rs in replica_sets
        if _owned_by(rs, dep.metadata.uid)
        and (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision") == revision
    ]
    mine = [
        p for p in all_pods if _live(p) and any(_owned_by(p, rs.metadata.uid) for rs in current)
    ]
    if _controller_behind(dep):
        s.phase = "waiting for the controller"
        return s
    stuck = next(
        (
            c
            for c in st.conditions or []
            if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded"
        ),
        None,
    )
    updated, replicas, available = (
        st.updated_replicas or 0,
        st.replicas or 0,
        st.available_replicas or 0,
    )
    if updated >= desired and replicas <= updated and available >= updated:
        s.done, s.phase = True, "available"
        return s
    if _fail_from(s, mine, in_job=False):
        return s
    refused = _condition(dep, "ReplicaFailure")  # pods refused at creation (admission)
    stuck = stuck or refused
    if stuck:
        s.failed, s.reason, s.message = True, stuck.reason, stuck.message
        s.phase = f"failed: {stuck.reason}"
        return s
    if updated < desired:
        s.phase = f"rolling out: {updated} of {desired} updated"
    elif replicas > updated:
        s.phase = f"rolling out: {replicas - updated} old replica(s) terminating"
    else:
        s.phase = f"rolling out: {available} of {updated} available"
    s.phase += _waiting_detail(mine)
    return s


def statefulset_status(sts, all_pods: list) -> WorkloadStatus:
    s = _status_of("StatefulSet", sts)
    st = sts.status
    desired = _replicas(sts)
    ready = st.ready_replicas or 0
    s.ready = f"{ready}/{desired}"
    if _controller_behind(sts):
        s.phase = "waiting for the controller"
        return s
    strategy = sts.spec.update_strategy
    mine = [
        p
        for p in _owned_pods(all_pods, sts)
        if not st.update_revision
        or (p.metadata.labels or {}).get("controller-revision-hash") == st.update_revision
    ]
    partition = 0
    if strategy and strategy.rolling_update and strategy.rolling_update.partition:
        partition = strategy.rolling_update.partition
    if strategy and strategy.type == "OnDelete" and ready >= desired:
        s.done, s.phase = True, "ready (OnDelete: updates wait for pods to be deleted)"
        return s
    if ready >= desired:
        if partition and (st.updated_replicas or 0) >= desired - partition:
            s.done, s.phase = True, f"ready (partition {partition})"
            return s
        if not partition and st.update_revision == st.current_revision:
            s.done, s.phase = True, "ready"
            return s
    return _in_progress(s, mine, f"rolling out: {ready} of {desired} ready")


def daemonset_status(ds, all_pods: list) -> WorkloadStatus:
    s = _status_of("DaemonSet", ds)
    st = ds.status
    desired = st.desired_number_scheduled or 0
    s.ready = f"{st.number_ready or 0}/{desired}"
    if _controller_behind(ds):
        s.phase = "waiting for the controller"
        return s
    generation = str(ds.metadata.generation or "")
    mine = [
        p
        for p in _owned_pods(all_pods, ds)
        if (p.metadata.labels or {}).get("pod-template-generation", generation) == generation
    ]
    updated, available = st.updated_number_scheduled or 0, st.number_available or 0
    if updated >= desired and available >= desired:
        s.done, s.phase = True, "available" if desired else "available (no node matches)"
        return s
    return _in_progress(s, mine, f"rolling out: {available} of {desired} available")


def replicaset_status(rs, all_pods: list) -> WorkloadStatus:
    s = _status_of("ReplicaSet", rs)
    st = rs.status
    desired = _replicas(rs)
    s.ready = f"{st.ready_replicas or 0}/{desired}"
    available = st.available_replicas or 0
    if not _controller_behind(rs) and available >= desired:
        s.done, s.phase = True, "available"
        return s
    return _in_progress(s, _owned_pods(all_pods, rs), f"{available} of {desired} available")


def job_status(job, all_pods: list) -> WorkloadStatus:
    s = _status_of("Job", job)
    st = job.status
    completions = job.spec.completions
    s.ready = f"{st.succeeded or 0}/{completions}" if completions else f"{st.succeeded or 0}"
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        s.done, s.phase = True, "complete"
        return s
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed:
        s.failed, s.reason, s.message = True, failed.reason, failed.message
        s.phase = f"failed: {failed.reason}"
        mine = [p for p in all_pods if _owned_by(p, job.metadata.uid)]
        last = next((p for p in reversed(mine) if pods.pod_state(p).failed), None)
        if last is not None:
            s.pod = last.metadata.name
            s.exit_code = pods.pod_state(last).exit_code
        return s
    if job.spec.suspend:
        s.done, s.phase = True, "suspended"
        return s
    phase = f"running: {st.active or 0} active, {st.failed or 0} failed"
    return _in_progress(s, _owned_pods(all_pods, job), phase, in_job=True)


def cronjob_status(cj) -> WorkloadStatus:
    s = _status_of("CronJob", cj, done=True)
    s.phase = "suspended" if cj.spec.suspend else f"scheduled ({cj.spec.schedule})"
    return s


def pod_status(p) -> WorkloadStatus:
    s = WorkloadStatus("Pod", p.metadata.namespace, p.metadata.name)
    state = pods.pod_state(p)
    s.ready = f"{sum(1 for c in state.containers if c.get('ready'))}/{len(p.spec.containers)}"
    s.phase, s.exit_code = state.summary, state.exit_code
    if state.done and not state.failed:
        s.done = True
    elif state.done:
        s.failed, s.pod = True, p.metadata.name
        s.reason, s.message = state.reason or state.phase, state.message
    return s


class _Streams:
    """Background watches (one thread per stream) feeding one queue. Each stream is
    restarted from its last resourceVersion when the server ends it, from a fresh list
    after 410 Gone; a failure is queued as ("error", exception)."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._watches: list = []

    def add(self, key: Any, list_fn, *args, **kwargs) -> None:
        from kubernetes import watch

        w = watch.Watch()
        self._watches.append(w)
        threading.Thread(
            target=self._run, args=(key, w, list_fn, args, kwargs), daemon=True
        ).start()

    def _run(self, key, w, list_fn, args, kwargs) -> None:
        from kubernetes.client.exceptions import ApiException

        rv = None
        while not self._stop.is_set():
            try:
                extra: dict[str, str] = {"resource_version": rv} if rv else {}
                for ev in w.stream(
                    list_fn, *args, timeout_seconds=30, _request_timeout=60, **kwargs, **extra
                ):
                    if self._stop.is_set():
                        return
                    obj = ev["object"]
                    if ev["type"] == "ERROR":  # a Status: 410 Gone starts over from a list
                        if isinstance(obj, dict) and obj.get("code") == 410:
                            rv = None
                            break
                        raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                    rv = obj.metadata.resource_version
                    self.events.put((key, ev["type"], obj))
            except ApiException as e:
                if e.status == 410:
                    rv = None
                    continue
                self.events.put((key, "error", e))
                return
            except Exception as e:
                if not self._stop.is_set():
                    self.events.put((key, "error", e))
                return

    def stop(self) -> None:
        self._stop.set()
        for w in self._watches:
            w.stop()


def follow(
    api,
    workloads: list[tuple[str, str, str]],
    *,
    timeout: float,
    on_change: Callable[[list[WorkloadStatus]], None] | None = None,
    stop: threading.Event | None = None,
) -> list[WorkloadStatus]:
    """Watch every (kind, namespace, name) workload and its pods until each has an outcome;
    FollowTimeout (exit 5) when one has none after `timeout` seconds. Setting `stop` ends
    the watch early (`floxk dev` starts a new rollout): the statuses as they stand."""
    from kubernetes import client

    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    lists = {
        "Deployment": apps.list_namespaced_deployment,
        "StatefulSet": apps.list_namespaced_stateful_set,
        "DaemonSet": apps.list_namespaced_daemon_set,
        "ReplicaSet": apps.list_namespaced_replica_set,
        "Job": batch.list_namespaced_job,
        "CronJob": batch.list_namespaced_cron_job,
    }
    streams = _Streams()
    namespaces = sorted({ns for _, ns, _ in workloads})
    objects: dict[tuple[str, str, str], Any] = {}
    pod_cache: dict[str, dict[str, Any]] = {ns: {} for ns in namespaces}
    rs_cache: dict[str, dict[str, Any]] = {ns: {} for ns in namespaces}
    for ns in namespaces:
        streams.add(("Pod", ns), core.list_namespaced_pod, ns)
        if any(k == "Deployment" and n == ns for k, n, _ in workloads):
            streams.add(("ReplicaSet*", ns), apps.list_namespaced_replica_set, ns)
    for kind, ns, name in workloads:
        if kind != "Pod":
            streams.add((kind, ns, name), lists[kind], ns, field_selector=f"metadata.name={name}")

    def status(kind: str, ns: str, name: str) -> WorkloadStatus:
        all_pods = sorted(pod_cache[ns].values(), key=lambda p: p.metadata.creation_timestamp or 0)
        if kind == "Pod":
            p = pod_cache[ns].get(name)
            return pod_status(p) if p else WorkloadStatus(kind, ns, name, phase="not seen yet")
        obj = objects.get((kind, ns, name))
        if obj is None:
            return WorkloadStatus(kind, ns, name, phase="not seen yet")
        if kind == "Deployment":
            return deployment_status(obj, list(rs_cache[ns].values()), all_pods)
        if kind == "CronJob":
            return cronjob_status(obj)
        by_kind = {
            "StatefulSet": statefulset_status,
            "DaemonSet": daemonset_status,
            "ReplicaSet": replicaset_status,
            "Job": job_status,
        }
        return by_kind[kind](obj, all_pods)

    deadline = time.monotonic() + timeout
    last: list[dict] | None = None
    try:
        while True:
            statuses = [status(*w) for w in workloads]
            shown = [s.as_dict() for s in statuses]
            if on_change and shown != last:
                on_change(statuses)
            last = shown
            if all(s.settled for s in statuses) or (stop is not None and stop.is_set()):
                return statuses
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waiting = [s for s in statuses if not s.settled]
                raise FollowTimeout(
                    f"no outcome after {timeout:.0f} s for "
                    + "; ".join(f"{s.identity} ({s.phase})" for s in waiting),
                    hint="raise --timeout, or look closer: `kubectl describe "
                    f"{waiting[0].kind.lower()} -n {waiting[0].namespace} {waiting[0].name}`",
                    statuses=statuses,
                )
            try:
                wait = remaining if stop is None else min(remaining, 0.2)
                batch_ = [streams.events.get(timeout=wait)]
            except queue.Empty:
                continue
            while True:
                try:
                    batch_.append(streams.events.get_nowait())
                except queue.Empty:
                    break
            for key, type_, obj in batch_:
                if type_ == "error":
                    err = kube.translate(obj, f"watching {key[0]} in {key[1]}")
                    raise err or obj
                cache: dict[Any, Any]
                if key[0] == "Pod":
                    cache, name = pod_cache[key[1]], obj.metadata.name
                elif key[0] == "ReplicaSet*":
                    cache, name = rs_cache[key[1]], obj.metadata.name
                else:
                    cache, name = objects, key
                if type_ == "DELETED":
                    cache.pop(name, None)
                else:
                    cache[name] = obj
    finally:
        streams.stop()


def failing_pod_events(api, s: WorkloadStatus) -> list[dict[str, Any]]:
    """The events of the pod that shows why a workload failed (the runtime's message)."""
    if not s.pod:
        return []
    try:
        return pods.events(api, s.pod, s.namespace)
    except FloxkError:
        return []


# --- deleting ---------------------------------------------------------------------------------


@dataclass
class Deleted:
    kind: str
    name: str
    namespace: str | None
    result: str  # deleted, not found
    gone: bool = field(default=False)

    @property
    def identity(self) -> str:
        return pods.identity(self.kind, self.namespace, self.name)


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
            raise _at(doc, e) from None
        ns = _namespace_of(doc, body, namespace, default_namespace) if resource.namespaced else None
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
        try:
            with kube.calls(f"reading {entry.identity}"):
                obj = client.get(resource, name=entry.name, namespace=entry.namespace)
        except kube.KubeError as e:
            if e.status == 404:
                entry.gone = True
                return
            raise
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
