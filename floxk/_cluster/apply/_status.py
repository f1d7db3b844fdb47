"""Where a workload stands, from its object and its pods (pure: what `kubectl rollout
status` and `kubectl wait --for=condition=complete` would say, and why it failed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from floxk._cluster import pod as pods


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
    s = _status_of("CronJob", cj)
    s.done = True  # a CronJob's outcome is being scheduled
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
