"""Following workloads to an outcome: one watch stream per workload and per namespace's
pods, fed into one queue, each change turned into WorkloadStatus by _status."""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from floxk._cluster import kube
from floxk._cluster import pod as pods
from floxk._cluster.apply._status import (
    WorkloadStatus,
    cronjob_status,
    daemonset_status,
    deployment_status,
    job_status,
    pod_status,
    replicaset_status,
    statefulset_status,
)
from shim.core.errors import FloxkError


class FollowTimeout(kube.WaitTimeout):
    """Some workload reached no outcome in time; statuses says where each stands."""

    def __init__(self, message: str, *, hint: str, statuses: list[WorkloadStatus]) -> None:
        super().__init__(message, hint=hint)
        self.statuses = statuses


class Streams:
    """Background watches (one thread per stream) feeding one queue. Each stream is
    restarted from its last resourceVersion when the server ends it, from a fresh list
    after 410 Gone; a failure is queued as ("error", exception).

    stop() ends every thread before it returns: it shuts down the socket a watch is
    blocked reading, then joins. A thread left running at interpreter exit can abort
    the process after its work is done (CI saw `floxk apply` exit by SIGABRT after
    printing its result)."""

    JOIN_TIMEOUT = 10.0

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # orders a response's opening against stop()
        self._responses: list = []
        self._threads: list[threading.Thread] = []

    def add(self, key: Any, list_fn, *args, **kwargs) -> None:
        from kubernetes import watch

        t = threading.Thread(
            target=self._run,
            args=(key, watch.Watch(), self.opening(list_fn), args, kwargs),
            name=f"floxk-watch {key}",
            daemon=True,
        )
        self._threads.append(t)
        t.start()

    def opening(self, list_fn):
        """list_fn, keeping each watch response it opens so stop() can shut it down (also
        for streams read by threads of the caller's, e.g. `floxk dev`'s log tails). Its
        docstring is kept: the client reads the model type and watch argument from it."""

        @functools.wraps(list_fn)
        def call(*args, **kwargs):
            resp = list_fn(*args, **kwargs)
            with self._lock:
                self._responses.append(resp)
                if self._stop.is_set():
                    _shut(resp)
            return resp

        return call

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
                if not self._stop.is_set():
                    self.events.put((key, "error", e))
                return
            except Exception as e:
                if not self._stop.is_set():
                    self.events.put((key, "error", e))
                return

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            for resp in self._responses:
                _shut(resp)
        deadline = time.monotonic() + self.JOIN_TIMEOUT
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> list[str]:
        """The names of the stream threads still running (none after stop())."""
        return [t.name for t in self._threads if t.is_alive()]


def _shut(resp) -> None:
    """Unblock a read of this watch response in another thread (urllib3's shutdown);
    one already closed or released to the pool has no reader left to unblock."""
    try:
        resp.shutdown()
    except Exception:
        pass


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
    streams = Streams()
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
