"""`floxk apply` / `floxk delete`: any workload, multi-document files, followed to an outcome.

plan() reads nothing but the server's discovery: it fills every pod-bearing object in the
way `floxk run pod` fills a Pod, gives namespaced objects their namespace and sorts them
in dependency order. check() dry-runs every object on the server (server-side apply with
dryRun=All) before apply() changes anything, so one bad document applies nothing. follow()
watches the workloads and their pods (the kubernetes client's watch, one stream each, fed
into one queue) until each has an outcome, like `kubectl rollout status` / `kubectl wait
--for=condition=complete`. delete() is the inverse of apply().

The jobs live apart: _plan (fill, plan, check), _apply, _status (where a workload stands,
pure), _follow (the watches), _delete. This module is their public face.
"""

from floxk._cluster.apply._apply import Applied, apply, wait_default_service_account
from floxk._cluster.apply._delete import Deleted, delete
from floxk._cluster.apply._follow import FollowTimeout, Streams, failing_pod_events, follow
from floxk._cluster.apply._plan import (
    ORDER,
    WORKLOADS,
    Plan,
    Planned,
    Progress,
    check,
    fill,
    namespace_exists,
    order,
    plan,
)
from floxk._cluster.apply._status import (
    WorkloadStatus,
    cronjob_status,
    daemonset_status,
    deployment_status,
    job_status,
    pod_problem,
    pod_status,
    replicaset_status,
    statefulset_status,
)

__all__ = [
    "ORDER",
    "WORKLOADS",
    "Applied",
    "Deleted",
    "FollowTimeout",
    "Plan",
    "Planned",
    "Progress",
    "Streams",
    "WorkloadStatus",
    "apply",
    "check",
    "cronjob_status",
    "daemonset_status",
    "delete",
    "deployment_status",
    "failing_pod_events",
    "fill",
    "follow",
    "job_status",
    "namespace_exists",
    "order",
    "plan",
    "pod_problem",
    "pod_status",
    "replicaset_status",
    "statefulset_status",
    "wait_default_service_account",
]
