"""`floxk apply` / `floxk delete` without a cluster: reading manifests (every bad input a
clear error naming file and line), filling pod templates, dependency order, workload
outcomes from the objects the API returns (typed kubernetes models, as the watch yields
them), Kubernetes API failures turned into errors with hints, and a real refused
connection through the CLI. The same commands against a real cluster: tests/k8s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from floxk._cluster import apply as applying
from floxk._cluster import kube
from floxk._cluster import pod as pods
from shim.core.errors import FloxkError, NotFoundError
from testkit.net import free_port
from tests.manifests import service, workload

DEPLOYMENT = workload("Deployment", "web", """\
initContainers:
  - name: init
    command: [sh, -c, "echo init"]
containers:
  - name: web
    command: [web-serve]
    envFrom: [{configMapRef: {name: web-config}}]
""", replicas=2)  # fmt: skip
SERVICE = service("web", "[{port: 80, targetPort: 8080}]")
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {GREETING: hi}
"""


def _docs(text: str, source: str = "f.yaml") -> list[pods.Document]:
    return pods.parse_documents(text, source)


# --- reading ------------------------------------------------------------------------------


def test_multi_document_file_keeps_lines_and_skips_empty_documents():
    text = "---\n" + DEPLOYMENT + "---\n# only a comment\n---\n" + SERVICE
    docs = _docs(text)
    assert [(d.kind, d.name) for d in docs] == [("Deployment", "web"), ("Service", "web")]
    assert docs[0].line == 2 and text.splitlines()[docs[1].line - 1] == "apiVersion: v1"
    assert docs[1].where == f"f.yaml:{docs[1].line}"


def test_kind_list_is_expanded():
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}},
            ],
        }
    )
    assert [d.name for d in _docs(text, "list.json")] == ["a", "b"]


def test_an_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing here\n---\n")
    with pytest.raises(pods.ObjectFileError, match="no objects in .*empty.yaml"):
        pods.read_documents([tmp_path / "empty.yaml"])


def test_not_yaml_names_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: Pod\nmetadata:\n  name: [unclosed\n  x: : y\n")
    with pytest.raises(pods.ObjectFileError, match=r"bad.yaml:\d+: not valid YAML") as e:
        pods.read_documents([tmp_path / "bad.yaml"])
    assert e.value.hint


def test_a_document_without_kind_names_its_line():
    with pytest.raises(pods.ObjectFileError, match=r"f.yaml:6: the document has no kind"):
        _docs(CONFIGMAP + "---\napiVersion: v1\nmetadata: {name: x}\n")


def test_a_document_that_is_not_a_mapping_or_has_no_name():
    with pytest.raises(pods.ObjectFileError, match="must be a mapping"):
        _docs("- a\n- b\n")
    with pytest.raises(pods.ObjectFileError, match="ConfigMap has no metadata.name"):
        _docs("apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x-}\n")


def test_a_directory_reads_its_manifests_in_name_order(tmp_path):
    (tmp_path / "b.yaml").write_text(SERVICE)
    (tmp_path / "a.yml").write_text(CONFIGMAP)
    (tmp_path / "notes.txt").write_text("not a manifest")
    docs = pods.read_documents([tmp_path])
    assert [d.kind for d in docs] == ["ConfigMap", "Service"]
    with pytest.raises(NotFoundError):
        pods.read_documents([tmp_path / "missing.yaml"])


def test_stdin_is_read_for_dash():
    import io

    docs = pods.read_documents(["-"], stdin=io.StringIO(CONFIGMAP))
    assert docs[0].source == "-" and docs[0].name == "web-config"


def test_run_pod_still_wants_exactly_one_pod(tmp_path):
    (tmp_path / "dep.yaml").write_text(DEPLOYMENT)
    with pytest.raises(FloxkError, match="exactly one Pod") as e:
        pods.load_manifest(tmp_path / "dep.yaml")
    assert "floxk apply" in e.value.hint


# --- filling ------------------------------------------------------------------------------


def test_deployment_template_is_filled_like_run_pod_fills_a_pod():
    [doc] = _docs(DEPLOYMENT)
    body = pods.fill_object(doc.body, env_ref="alice/web")
    spec = body["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "flox"
    assert [c["image"] for c in spec["containers"] + spec["initContainers"]] == [
        pods.STUB_IMAGE,
        pods.STUB_IMAGE,
    ]
    assert body["spec"]["template"]["metadata"]["annotations"] == {
        "flox.dev/environment": "alice/web"
    }
    assert body["spec"]["template"]["metadata"]["labels"] == {"app": "web"}
    assert "runtimeClassName" not in doc.body["spec"]["template"]["spec"]  # input untouched
    assert pods.is_flox(body) and not pods.is_flox(doc.body)


def test_env_flag_fills_only_templates_that_name_none():
    text = DEPLOYMENT.replace(
        "      labels: {app: web}\n",
        "      labels: {app: web}\n      annotations: {flox.dev/environment: bob/own}\n",
    )
    [doc] = _docs(text)
    body = pods.fill_object(doc.body, env_ref="alice/web")
    assert body["spec"]["template"]["metadata"]["annotations"]["flox.dev/environment"] == (
        "bob/own"
    )
    # `floxk run pod --env` replaces the manifest's ref (its documented behaviour).
    pod = pods.fill_pod(
        {
            "metadata": {"name": "p", "annotations": {"flox.dev/environment": "bob/own"}},
            "spec": {"containers": [{"name": "a"}]},
        },
        env_ref="alice/web",
    )
    assert pod["metadata"]["annotations"]["flox.dev/environment"] == "alice/web"


def test_cronjob_job_template_is_filled():
    body = pods.fill_object(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "tick"},
            "spec": {
                "schedule": "*/5 * * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "OnFailure",
                                "containers": [{"name": "t", "command": ["date"]}],
                            }
                        }
                    }
                },
            },
        },
        env_ref="alice/tools:2",
    )
    template = body["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["annotations"]["flox.dev/environment"] == "alice/tools:2"
    assert template["spec"]["containers"][0]["image"] == pods.STUB_IMAGE


def test_image_workloads_and_other_runtime_classes_are_applied_as_written():
    plain = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "db"},
        "spec": {"template": {"spec": {"containers": [{"name": "db", "image": "postgres:17"}]}}},
    }
    assert pods.fill_object(plain) == plain and not pods.is_flox(plain)
    other = json.loads(json.dumps(plain))
    other["spec"]["template"]["spec"]["runtimeClassName"] = "gvisor"
    assert pods.fill_object(other, env_ref="alice/web") == other
    # With --env even an image workload runs on the flox runtime (on top of its image).
    filled = pods.fill_object(plain, env_ref="alice/web")
    assert filled["spec"]["template"]["spec"]["runtimeClassName"] == "flox"
    assert filled["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:17"


def test_a_workload_without_containers_or_environment_is_refused():
    [doc] = _docs(DEPLOYMENT)
    with pytest.raises(FloxkError, match="Deployment web names no environment") as e:
        applying.fill([doc], env_ref=None)
    assert e.value.message.startswith("f.yaml:1: ") and "--env" in e.value.hint
    empty = json.loads(json.dumps(doc.body))
    empty["spec"]["template"]["spec"]["containers"] = []
    with pytest.raises(FloxkError, match="has no spec.containers"):
        pods.fill_object(empty, env_ref="alice/web")


def test_an_invalid_ref_in_one_of_several_documents_fails_them_all():
    bad = DEPLOYMENT.replace("{name: web}", "{name: web2}", 1).replace(
        "      labels: {app: web}\n",
        "      labels: {app: web}\n      annotations: {flox.dev/environment: 'no slash'}\n",
    )
    docs = _docs(CONFIGMAP + "---\n" + DEPLOYMENT + "---\n" + bad)
    with pytest.raises(FloxkError, match=r"f.yaml:\d+: Deployment web2: annotation"):
        applying.fill(docs, env_ref="alice/web")


def test_flox_annotations_are_checked_with_the_nodes_parser():
    [doc] = _docs(
        DEPLOYMENT.replace(
            "      labels: {app: web}\n",
            "      labels: {app: web}\n      annotations: {flox.dev/activate-mode: sometimes}\n",
        )
    )
    with pytest.raises(FloxkError, match="not an activation mode"):
        pods.fill_object(doc.body, env_ref="alice/web")


def test_dependency_order_keeps_file_order_within_a_kind():
    kinds = ["Deployment", "Ingress", "Service", "ConfigMap", "Namespace", "Widget", "Job"]
    kinds += ["ConfigMap", "Role", "StatefulSet"]
    objects = [(k, i) for i, k in enumerate(kinds)]
    ordered = applying.order(objects, lambda o: o[0])
    assert [k for k, _ in ordered] == [
        "Namespace",
        "ConfigMap",
        "ConfigMap",
        "Role",
        "Service",
        "Deployment",
        "StatefulSet",
        "Job",
        "Ingress",
        "Widget",
    ]
    assert [i for k, i in ordered if k == "ConfigMap"] == [3, 7]


# --- outcomes -----------------------------------------------------------------------------

UID = "dep-uid"


def _meta(name, *, uid=None, owner=None, labels=None, annotations=None, generation=1):
    refs = (
        [k8s.V1OwnerReference(api_version="v1", kind="X", name="o", uid=owner)] if owner else None
    )
    return k8s.V1ObjectMeta(
        name=name,
        namespace="team",
        uid=uid,
        owner_references=refs,
        labels=labels,
        annotations=annotations,
        generation=generation,
        creation_timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _pod(name, owner, *, waiting=None, terminated=None, restart="Always", labels=None):
    state = k8s.V1ContainerState(
        waiting=k8s.V1ContainerStateWaiting(reason=waiting, message=f"floxk: {waiting}")
        if waiting
        else None,
        terminated=terminated,
        running=None if (waiting or terminated) else k8s.V1ContainerStateRunning(),
    )
    status = k8s.V1ContainerStatus(
        name="c", image="i", image_id="", ready=False, restart_count=0, state=state
    )
    return k8s.V1Pod(
        metadata=_meta(name, owner=owner, labels=labels),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="c")], restart_policy=restart),
        status=k8s.V1PodStatus(phase="Pending", container_statuses=[status]),
    )


def _deployment(*, replicas=2, updated=0, ready=0, available=0, total=None, conditions=None):
    return k8s.V1Deployment(
        metadata=_meta(
            "web", uid=UID, annotations={"deployment.kubernetes.io/revision": "2"}, generation=3
        ),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas, selector=k8s.V1LabelSelector(), template=k8s.V1PodTemplateSpec()
        ),
        status=k8s.V1DeploymentStatus(
            observed_generation=3,
            replicas=updated if total is None else total,
            updated_replicas=updated,
            ready_replicas=ready,
            available_replicas=available,
            conditions=conditions,
        ),
    )


def _rs(name, revision):
    return k8s.V1ReplicaSet(
        metadata=_meta(
            name,
            uid=f"{name}-uid",
            owner=UID,
            annotations={"deployment.kubernetes.io/revision": revision},
        ),
        spec=k8s.V1ReplicaSetSpec(selector=k8s.V1LabelSelector()),
    )


def test_deployment_rolls_out_then_is_available():
    rs = [_rs("web-new", "2")]
    rolling = applying.deployment_status(_deployment(updated=1, ready=1, available=1), rs, [])
    assert not rolling.settled and rolling.ready == "1/2" and "1 of 2 updated" in rolling.phase
    done = applying.deployment_status(_deployment(updated=2, ready=2, available=2), rs, [])
    assert done.done and not done.failed and done.phase == "available"


def test_deployment_fails_on_a_pod_of_its_current_revision_only():
    rs = [_rs("web-old", "1"), _rs("web-new", "2")]
    old_broken = _pod("web-old-a", "web-old-uid", waiting="CreateContainerError")
    new_starting = _pod("web-new-a", "web-new-uid", waiting="ContainerCreating")
    dep = _deployment(updated=1, total=2, ready=1, available=1)
    s = applying.deployment_status(dep, rs, [old_broken, new_starting])
    assert not s.failed and "ContainerCreating" in s.phase
    new_broken = _pod("web-new-b", "web-new-uid", waiting="CreateContainerError")
    s = applying.deployment_status(dep, rs, [old_broken, new_broken])
    assert s.failed and s.pod == "web-new-b" and s.reason == "CreateContainerError"
    assert s.message == "floxk: CreateContainerError"


def test_deployment_progress_deadline_is_a_failure():
    cond = k8s.V1DeploymentCondition(
        type="Progressing", status="False", reason="ProgressDeadlineExceeded", message="slow"
    )
    s = applying.deployment_status(_deployment(conditions=[cond]), [], [])
    assert s.failed and s.reason == "ProgressDeadlineExceeded" and s.message == "slow"


def test_replicaset_and_cronjob_outcomes():
    def rs(*, available, observed):
        return k8s.V1ReplicaSet(
            metadata=_meta("web-rs", uid="rs-uid", generation=2),
            spec=k8s.V1ReplicaSetSpec(replicas=2, selector=k8s.V1LabelSelector()),
            status=k8s.V1ReplicaSetStatus(
                replicas=2, ready_replicas=available, available_replicas=available,
                observed_generation=observed,
            ),
        )  # fmt: skip

    s = applying.replicaset_status(rs(available=1, observed=2), [])
    assert not s.settled and s.ready == "1/2" and s.phase == "1 of 2 available"
    assert not applying.replicaset_status(rs(available=2, observed=1), []).settled
    assert applying.replicaset_status(rs(available=2, observed=2), []).done
    broken = _pod("web-rs-a", "rs-uid", waiting="CreateContainerError")
    assert applying.replicaset_status(rs(available=1, observed=2), [broken]).pod == "web-rs-a"
    for suspend, phase in ((False, "scheduled (*/5 * * * *)"), (True, "suspended")):
        cj = k8s.V1CronJob(
            metadata=_meta("tick"),
            spec=k8s.V1CronJobSpec(
                schedule="*/5 * * * *", suspend=suspend, job_template=k8s.V1JobTemplateSpec()
            ),
        )
        s = applying.cronjob_status(cj)
        assert s.done and not s.failed and s.phase == phase and s.identity == "CronJob team/tick"


def _job(conditions=None, *, succeeded=0, suspend=False):
    return k8s.V1Job(
        metadata=_meta("batch", uid="job-uid"),
        spec=k8s.V1JobSpec(template=k8s.V1PodTemplateSpec(), completions=1, suspend=suspend),
        status=k8s.V1JobStatus(conditions=conditions, succeeded=succeeded, active=1),
    )


def test_job_outcomes():
    complete = k8s.V1JobCondition(type="Complete", status="True")
    assert applying.job_status(_job([complete], succeeded=1), []).done
    failed = k8s.V1JobCondition(
        type="Failed", status="True", reason="BackoffLimitExceeded", message="too many"
    )
    s = applying.job_status(_job([failed]), [])
    assert s.failed and s.reason == "BackoffLimitExceeded"
    # A crash loop is a Job's retry (restartPolicy OnFailure); the runtime refusing is final.
    looping = _pod("batch-a", "job-uid", waiting="CrashLoopBackOff", restart="OnFailure")
    assert not applying.job_status(_job(), [looping]).settled
    refused = _pod("batch-b", "job-uid", waiting="CreateContainerError", restart="OnFailure")
    s = applying.job_status(_job(), [looping, refused])
    assert s.failed and s.pod == "batch-b"
    assert applying.job_status(_job(suspend=True), []).done


def test_statefulset_and_daemonset_outcomes():
    sts = k8s.V1StatefulSet(
        metadata=_meta("db", uid="sts-uid"),
        spec=k8s.V1StatefulSetSpec(
            replicas=2,
            selector=k8s.V1LabelSelector(),
            service_name="db",
            template=k8s.V1PodTemplateSpec(),
        ),
        status=k8s.V1StatefulSetStatus(
            observed_generation=1,
            replicas=2,
            ready_replicas=1,
            current_revision="db-1",
            update_revision="db-1",
        ),
    )
    assert not applying.statefulset_status(sts, []).settled
    broken = _pod(
        "db-1", "sts-uid", waiting="RunContainerError", labels={"controller-revision-hash": "db-1"}
    )
    assert applying.statefulset_status(sts, [broken]).failed
    sts.status.ready_replicas = 2
    assert applying.statefulset_status(sts, []).done
    ds = k8s.V1DaemonSet(
        metadata=_meta("agent", uid="ds-uid", generation=2),
        spec=k8s.V1DaemonSetSpec(selector=k8s.V1LabelSelector(), template=k8s.V1PodTemplateSpec()),
        status=k8s.V1DaemonSetStatus(
            observed_generation=2,
            desired_number_scheduled=2,
            current_number_scheduled=2,
            number_misscheduled=0,
            number_ready=1,
            updated_number_scheduled=2,
            number_available=1,
        ),
    )
    old = _pod(
        "agent-old", "ds-uid", waiting="CrashLoopBackOff", labels={"pod-template-generation": "1"}
    )
    s = applying.daemonset_status(ds, [old])
    assert not s.settled and s.ready == "1/2"
    new = _pod(
        "agent-new", "ds-uid", waiting="CrashLoopBackOff", labels={"pod-template-generation": "2"}
    )
    assert applying.daemonset_status(ds, [old, new]).failed
    ds.status.number_available = ds.status.number_ready = 2
    assert applying.daemonset_status(ds, []).done


def _ended_pod(phase: str, exit_code: int, reason: str):
    """A bare pod "once" (restartPolicy Never) whose one container ended with `exit_code`."""
    terminated = k8s.V1ContainerStateTerminated(exit_code=exit_code, reason=reason)
    pod = _pod("once", None, restart="Never", terminated=terminated)
    pod.status.phase = phase
    return pod


def test_bare_pod_outcome_carries_its_exit_code():
    assert applying.pod_status(_ended_pod("Succeeded", 0, "Completed")).done
    s = applying.pod_status(_ended_pod("Failed", 3, "Error"))
    assert s.failed and s.exit_code == 3 and s.pod == "once"


# --- API failures -----------------------------------------------------------------------------


def _api_error(status: int, reason: str, message: str, **details) -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": status,
        }
    )
    return e


@pytest.mark.parametrize(
    ("status", "reason", "message", "details", "hint_part", "exit_code"),
    [
        (
            404,
            "NotFound",
            'namespaces "team" not found',
            {"name": "team", "kind": "namespaces"},
            "--no-create-namespace",
            3,
        ),
        (403, "Forbidden", 'pods is forbidden: User "dev" cannot create', {}, "auth can-i", 1),
        (
            409,
            "Conflict",
            'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply": .spec.replicas',
            {},
            "--force-conflicts",
            1,
        ),
        (409, "AlreadyExists", 'pods "p" already exists', {}, "exists already", 1),
        (
            422,
            "Invalid",
            'Job.batch "j" is invalid: spec.template: Invalid value: field is immutable',
            {},
            "floxk delete -f",
            1,
        ),
        (
            422,
            "Invalid",
            'Deployment "w" is invalid: spec.replicas: must be >= 0',
            {},
            "explain",
            1,
        ),
        (401, "Unauthorized", "Unauthorized", {}, "kind export kubeconfig", 1),
    ],
)
def test_api_failures_keep_the_servers_message_and_get_a_hint(
    status, reason, message, details, hint_part, exit_code
):
    err = kube.translate(_api_error(status, reason, message, **details), "applying Pod team/p")
    assert isinstance(err, kube.KubeError)
    assert err.message == f"applying Pod team/p: {message}"
    assert hint_part in err.hint and err.exit_code == exit_code and err.status == status


def test_other_exceptions_are_not_translated():
    assert kube.translate(ValueError("x"), "doing") is None
    with pytest.raises(KeyError):
        with kube.calls("doing"):
            raise KeyError("mine")


@pytest.fixture
def refused_kubeconfig(tmp_path):
    """A kubeconfig for an API server that is not there: connections are refused."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        f"clusters: [{{name: gone, cluster: {{server: 'https://127.0.0.1:{free_port()}', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: u, namespace: team}}]\n"
    )
    return path


def _floxk(*args: str, kubeconfig, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "FLOXK_CACHE": str(kubeconfig.parent)}
    return subprocess.run(
        [sys.executable, "-m", "floxk", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
    )


def test_context_namespace_comes_from_the_kubeconfig(refused_kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(refused_kubeconfig))
    assert kube.context_namespace("gone") == "team"
    assert kube.context_namespace("other") == "default"


@pytest.mark.parametrize(
    "command",
    [
        ["apply", "-f", "-"],
        ["delete", "-f", "-"],
        ["run", "pod", "-f", "POD", "--env", "alice/x"],
        ["run", "pod", "p", "--env", "alice/x", "--", "true"],
    ],
)
def test_a_refused_connection_is_an_error_not_a_traceback(refused_kubeconfig, command, tmp_path):
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec: {containers: [{name: a, command: [true]}]}\n"
    )
    argv = [str(tmp_path / "pod.yaml") if a == "POD" else a for a in command]
    r = _floxk(*argv, kubeconfig=refused_kubeconfig, stdin=(tmp_path / "pod.yaml").read_text())
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "cannot reach the Kubernetes API at https://127.0.0.1:" in r.stderr
    assert "connection refused" in r.stderr and "hint:" in r.stderr


def test_bad_input_fails_before_the_cluster_is_contacted(refused_kubeconfig, tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    r = _floxk("apply", "-f", str(tmp_path / "empty.yaml"), kubeconfig=refused_kubeconfig)
    assert r.returncode == 1 and "no objects in" in r.stderr and "Traceback" not in r.stderr
    r = _floxk("apply", "-f", "-", kubeconfig=refused_kubeconfig, stdin="kind: [\n")
    assert r.returncode == 1 and "-:2: not valid YAML" in r.stderr, r.stderr
    r = _floxk("apply", "-f", str(tmp_path / "nope.yaml"), kubeconfig=refused_kubeconfig)
    assert r.returncode == 3 and "does not exist" in r.stderr


def test_a_kubeconfig_whose_credentials_cannot_be_had(tmp_path):
    """An exec credential plugin that fails (what an expired cloud login looks like)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: cloud\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, "
        "command: 'false', interactiveMode: Never}}}]\n"
        "contexts: [{name: cloud, context: {cluster: c, user: u}}]\n"
    )
    r = _floxk("apply", "-f", "-", kubeconfig=path, stdin=CONFIGMAP)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    # The plugin's failure is said (in floxk's words), then why the request failed.
    assert "warning: exec: process returned 1" in r.stderr
    assert "cannot reach the Kubernetes API" in r.stderr and "Retrying" not in r.stderr


def test_a_kubeconfig_whose_certificate_file_is_gone(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: cert\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        f"users: [{{name: u, user: {{client-certificate: {tmp_path}/gone.pem, "
        f"client-key: {tmp_path}/gone.key}}}}]\n"
        "contexts: [{name: cert, context: {cluster: c, user: u}}]\n"
    )
    r = _floxk("apply", "-f", "-", kubeconfig=path, stdin=CONFIGMAP)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "context 'cert' cannot be used" in r.stderr and "gone.pem" in r.stderr
    assert "kind export kubeconfig" in r.stderr


def test_the_live_table_on_a_terminal(monkeypatch):
    """The terminal path of the follow display (rich Live), fed the statuses a watch gives."""
    import io

    from rich.console import Console

    from floxk.cli import apply as apply_cli

    screen = io.StringIO()
    monkeypatch.setattr(apply_cli, "err_console", Console(file=screen, force_terminal=True))
    rolling = applying.WorkloadStatus("Deployment", "team", "web", "1/2", "rolling out")
    done = applying.WorkloadStatus("Deployment", "team", "web", "2/2", "available", done=True)

    def follow(api, workloads, *, timeout, on_change):
        on_change([rolling])
        on_change([done])
        return [done]

    monkeypatch.setattr(applying, "follow", follow)
    statuses, code = apply_cli._follow(
        None, [("Deployment", "team", "web")], timeout=5, quiet=False
    )
    assert code == 0 and statuses == [done]
    text = screen.getvalue()
    assert "workload" in text and "Deployment team/web" in text and "available" in text
