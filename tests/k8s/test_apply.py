"""`floxk apply` / `floxk delete` on a real kind cluster made by `floxk up --config` (a
worker node, a port mapping, a node label from the user's kind config), and every
Kubernetes API failure a user meets turned into an error with the server's message.

Marker k8s; run by `task test:k8s` (FLOXK_E2E_KIND=1) once the kind node image is built.
Every command runs with a private KUBECONFIG: other clusters made on this machine meanwhile
do not move the current context under the tests."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import urllib.request
from pathlib import Path

import pytest

from testkit.net import free_port
from tests.k8s.conftest import HELLO_MANIFEST, PrivateKube, fresh_cluster, lock_and_push, run_pod
from tests.manifests import service, workload

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_APPLY_CLUSTER", "floxk-apply")
CONTEXT = f"kind-{NAME}"
ENV = "apply/tools"
NODE_PORT = 30080
CONTROL_PLANE_TOLERATION = (  # a pod spec's lines
    "tolerations:\n"
    "  - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}\n"
)


class Env:
    host_port: int
    namespace: str


E = Env()
K = PrivateKube(CONTEXT, floxk_timeout=900, kubectl_timeout=300)
floxk, kubectl = K.floxk, K.kubectl


def in_namespace(verb: str, path, *flags: str, **kw):
    """`floxk VERB -f PATH -n <the test namespace> FLAGS` (VERB: apply or delete)."""
    return floxk(verb, "-f", str(path), "-n", E.namespace, *flags, **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    """`floxk up --config`: Flox's kind demo shape (a worker, a port mapping, a label)."""
    tmp = tmp_path_factory.mktemp("apply")
    K.kubeconfig = tmp / "kubeconfig"
    E.host_port = free_port()
    config = tmp / "kind.yaml"
    config.write_text(
        "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n"
        f"name: {NAME}\n"
        "nodes:\n"
        "  - role: control-plane\n"
        "    extraPortMappings:\n"
        f"      - {{containerPort: {NODE_PORT}, hostPort: {E.host_port}, listenAddress: 127.0.0.1}}\n"
        "  - role: worker\n"
        "    labels: {tier: apps}\n"
    )
    with fresh_cluster("--config", str(config), floxk=floxk) as up:
        assert up["name"] == NAME
        yield CONTEXT


@pytest.fixture(scope="module")
def tools(cluster, catalog_flake, tmp_path_factory) -> str:
    manifest = HELLO_MANIFEST + 'web.pkg-path = "web"\n[vars]\nFROM_ENV = "the environment"\n'
    directory = tmp_path_factory.mktemp("tools-env")
    lock_and_push(directory, manifest, catalog_flake, "--name", ENV, floxk=floxk)
    return ENV


WEB = workload("Deployment", "web", "terminationGracePeriodSeconds: 1\n" + CONTROL_PLANE_TOLERATION + """\
containers:
  - name: web
    command: [web-serve]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
""", replicas=2)  # fmt: skip
DB = workload("StatefulSet", "db", """\
terminationGracePeriodSeconds: 1
containers:
  - name: db
    command: [sh, -c, 'echo "db $HOSTNAME"; exec sleep 3600']
""", replicas=1, head="  serviceName: db\n")  # fmt: skip
AGENT = workload("DaemonSet", "agent", "hostNetwork: true\nterminationGracePeriodSeconds: 1\n"
                 + CONTROL_PLANE_TOLERATION + """\
containers:
  - name: agent
    command: [sh, -c, 'echo "agent on $(hostname)"; exec sleep 3600']
""")  # fmt: skip
WEB_SERVICE = service(
    "web", f"[{{port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}]", spec="  type: NodePort\n"
)
DB_SERVICE = service("db", "[{port: 5432}]", spec="  clusterIP: None\n")
BUNDLE = f"""\
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data: {{GREETING: from-configmap}}
---
{WEB}---
{WEB_SERVICE}---
{DB_SERVICE}---
{DB}---
{AGENT}---
apiVersion: batch/v1
kind: Job
metadata: {{name: once}}
spec:
  backoffLimit: 4
  template:
    spec:
      restartPolicy: OnFailure
      containers:
        - name: once
          command: [sh, -c, 'hello; echo "FROM_ENV=$FROM_ENV"']
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: "0 0 1 1 *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: tick
              command: [sh, -c, 'echo tick; hello']
---
apiVersion: v1
kind: Pod
metadata: {{name: init-demo}}
spec:
  restartPolicy: Never
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
    - name: init
      command: [sh, -c, 'echo from-init > /work/msg']
      volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
    - name: main
      command: [sh, -c, 'cat /work/msg; echo "GREETING=$GREETING"']
      envFrom: [{{configMapRef: {{name: app-config}}}}]
      volumeMounts: [{{name: work, mountPath: /work}}]
"""


@pytest.fixture(scope="module")
def bundle(cluster, tools, tmp_path_factory) -> dict:
    """The bundle applied with --env into a new namespace (-n): the apply's JSON result."""
    E.namespace = f"floxk-apply-{secrets.token_hex(3)}"
    path = tmp_path_factory.mktemp("bundle") / "bundle.yaml"
    path.write_text(BUNDLE)
    r = in_namespace("apply", path, "--env", tools, "--timeout", "480", "-o", "json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    result["path"] = str(path)
    return result


def _get(kind: str, name: str, namespace: str | None = None) -> dict:
    return json.loads(
        kubectl("get", kind, name, "-n", namespace or E.namespace, "-o", "json").stdout
    )


def _logs(what: str) -> str:
    return kubectl("logs", "-n", E.namespace, what, "--all-containers").stdout


def test_bundle_applied_in_dependency_order_into_a_new_namespace(bundle):
    applied = [(a["kind"], a["action"]) for a in bundle["applied"]]
    assert applied[0] == ("Namespace", "created")
    kinds = [k for k, _ in applied]
    assert kinds.index("ConfigMap") < kinds.index("Service") < kinds.index("Deployment")
    assert kinds.index("Pod") < kinds.index("Deployment") < kinds.index("StatefulSet")
    assert all(a["action"] == "created" for a in bundle["applied"])
    outcomes = {w["kind"]: w for w in bundle["workloads"]}
    assert set(outcomes) == {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
    assert all(w["done"] and not w["failed"] for w in outcomes.values()), outcomes
    raw = kubectl("get", "deploy", "web", "-n", E.namespace, "-o", "json", "--show-managed-fields")
    managers = {m["manager"] for m in json.loads(raw.stdout)["metadata"]["managedFields"]}
    assert "floxk" in managers


def test_deployment_and_service_reachable_through_the_configs_port_mapping(bundle):
    dep = _get("deployment", "web")
    assert dep["status"]["readyReplicas"] == 2
    template = dep["spec"]["template"]
    assert template["spec"]["runtimeClassName"] == "flox"
    assert template["spec"]["containers"][0]["image"] == "flox/empty:1.0.0"
    assert template["metadata"]["annotations"]["flox.dev/environment"] == ENV
    body = ""
    for _ in range(30):  # host port (kind extraPortMappings) -> NodePort -> pod
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{E.host_port}/", timeout=3) as resp:
                body = resp.read().decode()
                break
        except OSError:
            time.sleep(2)
    assert "hello from floxk web" in body


def test_the_configs_worker_and_its_label_are_kept(cluster):
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    labels = {n["metadata"]["name"]: n["metadata"]["labels"] for n in nodes}
    assert len(labels) == 2
    assert all(lab.get("flox.dev/enabled") == "true" for lab in labels.values())
    assert [n for n, lab in labels.items() if lab.get("tier") == "apps"] == [f"{NAME}-worker"]


def test_statefulset_ready(bundle):
    assert _get("statefulset", "db")["status"]["readyReplicas"] == 1
    assert "db db-0" in _logs("db-0")


def test_daemonset_with_host_network_on_every_node(bundle):
    ds = _get("daemonset", "agent")
    assert ds["status"]["desiredNumberScheduled"] == 2 == ds["status"]["numberReady"]
    pods = json.loads(
        kubectl("get", "pods", "-n", E.namespace, "-l", "app=agent", "-o", "json").stdout
    )["items"]
    for p in pods:
        assert p["spec"]["hostNetwork"] is True
        assert f"agent on {p['spec']['nodeName']}" in _logs(p["metadata"]["name"])


def test_job_with_restart_on_failure_completes(bundle):
    job = _get("job", "once")
    assert job["status"]["succeeded"] == 1
    log = _logs("job/once")
    assert "hello from floxk" in log and "FROM_ENV=the environment" in log


def test_cronjob_triggered_once(bundle):
    outcome = next(w for w in bundle["workloads"] if w["kind"] == "CronJob")
    assert outcome["phase"].startswith("scheduled")
    kubectl("create", "job", "-n", E.namespace, "tick-once", "--from=cronjob/tick")
    kubectl(
        "wait", "-n", E.namespace, "--for=condition=complete", "job/tick-once", "--timeout=240s"
    )
    log = _logs("job/tick-once")
    assert "tick" in log and "hello from floxk" in log


def test_init_container_on_the_stub_image_and_env_from_a_configmap(bundle):
    pod = _get("pod", "init-demo")
    assert pod["spec"]["initContainers"][0]["image"] == "flox/empty:1.0.0"
    log = kubectl("logs", "-n", E.namespace, "init-demo", "-c", "main").stdout
    assert "from-init" in log and "GREETING=from-configmap" in log


def test_a_second_apply_changes_nothing(bundle, tools):
    r = in_namespace("apply", bundle["path"], "--env", tools, "-o", "json", "--timeout", "240")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert {a["action"] for a in result["applied"]} == {"unchanged"}, result["applied"]


def test_pod_in_a_namespace_that_does_not_exist_yet(tools, tmp_path):
    """Was a kubernetes NotFoundError traceback: run pod -f creates the pod's namespace."""
    ns = f"floxk-new-{secrets.token_hex(3)}"
    (tmp_path / "pod.yaml").write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: lonely, namespace: {ns}}}\n"
        "spec:\n  restartPolicy: Never\n  containers:\n    - name: main\n      command: [hello]\n"
    )
    r = run_pod(tmp_path / "pod.yaml", tools, CONTEXT, "--logs", "--timeout", "240", floxk=floxk)
    assert r.returncode == 0, r.stderr
    assert "hello from floxk" in r.stdout and "Traceback" not in r.stderr
    r = run_pod(tmp_path / "pod.yaml", tools, CONTEXT, "--replace", "-n", f"{ns}-x",
                "--no-create-namespace", floxk=floxk)  # fmt: skip
    assert r.returncode == 3 and f"namespace {ns}-x does not exist" in r.stderr
    kubectl("delete", "namespace", ns, "--wait=false")


# --- bad input: each applies nothing ----------------------------------------------------------

MARKER = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: must-not-exist}\n"


@pytest.mark.parametrize(
    ("text", "expected", "code"),
    [
        ("", "no objects in", 1),
        ("kind: [unclosed\n", "not valid YAML", 1),
        (MARKER + "---\napiVersion: v1\nmetadata: {name: x}\n", "the document has no kind", 1),
        (
            MARKER + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: empty}\n"
            "spec:\n  selector: {matchLabels: {a: b}}\n  template:\n"
            "    metadata: {labels: {a: b}}\n    spec: {containers: []}\n",
            "Deployment empty has no spec.containers",
            1,
        ),
        (
            MARKER + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n"
            "spec: {containers: [{name: a, command: [hello]}]}\n---\n"
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n"
            "  annotations: {flox.dev/environment: 'not/a/ref'}\n"
            "spec: {containers: [{name: a, command: [hello]}]}\n",
            "flox.dev/environment='not/a/ref' is not an environment reference",
            1,
        ),
        (
            MARKER + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
            "the server does not know kind 'Widget' in apiVersion 'example.com/v1'",
            3,
        ),
        (
            MARKER + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: neg}\n"
            "spec:\n  replicas: -1\n  selector: {matchLabels: {a: b}}\n  template:\n"
            "    metadata: {labels: {a: b}}\n    spec: {containers: [{name: a}]}\n",
            "spec.replicas: Invalid value: -1",
            1,
        ),
    ],
    ids=["empty", "not-yaml", "no-kind", "no-containers", "bad-ref", "unknown-kind", "invalid"],
)
def test_bad_input_applies_nothing(bundle, tools, tmp_path, text, expected, code):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    r = in_namespace("apply", path, "--env", tools, "--context", CONTEXT)
    assert r.returncode == code, r.stderr
    assert expected in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
    gone = kubectl("get", "configmap", "must-not-exist", "-n", E.namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_a_workload_whose_environment_does_not_exist_fails_with_the_runtimes_message(
    bundle, tmp_path
):
    broken = workload("Deployment", "broken",
                      CONTROL_PLANE_TOLERATION + "containers: [{name: a, command: [hello]}]\n",
                      annotations="{flox.dev/environment: apply/no-such-env}")  # fmt: skip
    (tmp_path / "broken.yaml").write_text(broken)
    r = in_namespace("apply", tmp_path / "broken.yaml", "--timeout", "240")
    assert r.returncode == 1, r.stderr
    assert "Deployment" in r.stderr and "failed" in r.stderr
    assert "events of pod broken-" in r.stderr and "floxk:" in r.stderr
    assert "no-such-env" in r.stderr and "hint:" in r.stderr


def test_no_outcome_in_time_exits_5(bundle, tools, tmp_path):
    (tmp_path / "slow.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: never-ready}\n"
        "spec:\n  selector: {matchLabels: {app: nr}}\n  template:\n"
        "    metadata: {labels: {app: nr}}\n    spec:\n"
        "      containers:\n        - name: a\n          command: [sleep, '3600']\n"
        "          readinessProbe: {exec: {command: ['false']}, periodSeconds: 1}\n"
    )
    r = in_namespace("apply", tmp_path / "slow.yaml", "--env", tools, "--timeout", "20")
    assert r.returncode == 5, r.stderr
    assert "no outcome after 20 s" in r.stderr and "Deployment" in r.stderr


# --- API failures through a real API server -------------------------------------------------


def test_409_conflict_with_another_field_manager_then_force(bundle, tmp_path):
    kubectl(
        "apply",
        "-n",
        E.namespace,
        "-f",
        "-",
        stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {k: kubectl}\n",
    )
    kubectl("patch", "-n", E.namespace, "configmap", "shared", "-p", '{"data":{"k":"patched"}}')
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {k: floxk}\n"
    )
    r = in_namespace("apply", tmp_path / "cm.yaml")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "conflict" in r.stderr.lower() and "--force-conflicts" in r.stderr
    r = in_namespace("apply", tmp_path / "cm.yaml", "--force-conflicts")
    assert r.returncode == 0, r.stderr
    assert _get("configmap", "shared")["data"]["k"] == "floxk"


def test_422_immutable_field_is_caught_before_anything_changes(bundle, tools, tmp_path):
    changed = BUNDLE.replace("'hello; echo \"FROM_ENV=$FROM_ENV\"'", "'echo changed'")
    changed = changed.replace("data: {GREETING: from-configmap}", "data: {GREETING: changed}")
    assert changed != BUNDLE
    (tmp_path / "changed.yaml").write_text(changed)
    r = in_namespace("apply", tmp_path / "changed.yaml", "--env", tools)
    assert r.returncode == 1 and 'Job.batch "once" is invalid' in r.stderr
    assert "floxk delete -f" in r.stderr and "Traceback" not in r.stderr
    # The dry run failed, so the ConfigMap before the Job in the same file is unchanged.
    assert _get("configmap", "app-config")["data"]["GREETING"] == "from-configmap"


def _kubeconfig_for_token(token: str, path: Path) -> Path:
    """A kubeconfig for this cluster whose user is a bearer token."""
    raw = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = raw["clusters"][0]["cluster"]
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "limited",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "limited", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return path


def _service_account_token(name: str) -> str:
    kubectl("create", "serviceaccount", "-n", E.namespace, name)
    return kubectl("create", "token", "-n", E.namespace, name).stdout.strip()


def test_403_and_401_keep_the_servers_message(bundle, tmp_path):
    token = _service_account_token("nobody")
    kubeconfig = _kubeconfig_for_token(token, tmp_path / "limited")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nope}\ndata: {k: v}\n"
    )
    r = in_namespace("apply", tmp_path / "cm.yaml", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "forbidden" in r.stderr and "system:serviceaccount" in r.stderr
    assert "auth can-i" in r.stderr
    # The same token after its ServiceAccount is gone: the credentials are refused (401),
    # what an expired kubeconfig gets.
    kubectl("delete", "serviceaccount", "-n", E.namespace, "nobody")
    for _ in range(20):
        r = in_namespace("apply", tmp_path / "cm.yaml", env=env)
        if "Unauthorized" in r.stderr:
            break
        time.sleep(1)
    assert r.returncode == 1 and "Unauthorized" in r.stderr and "Traceback" not in r.stderr
    assert "kind export kubeconfig" in r.stderr
    forged = base64.urlsafe_b64encode(b"not a token").decode()
    env = {**os.environ, "KUBECONFIG": str(_kubeconfig_for_token(forged, tmp_path / "forged"))}
    r = floxk("status", "--name", NAME, "-o", "json", env=env)
    assert "Traceback" not in r.stderr


def test_404_of_the_server_through_the_core(bundle):
    from floxk._cluster import kube

    api = kube.api_client(CONTEXT, config_file=str(K.kubeconfig))
    with pytest.raises(kube.KubeError) as e:
        kube.apply(
            api,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": "floxk-no-such-namespace"},
            },
        )
    assert e.value.status == 404 and e.value.exit_code == 3
    assert 'namespaces "floxk-no-such-namespace" not found' in e.value.message
    assert "--no-create-namespace" in e.value.hint


def test_delete_is_the_inverse_and_idempotent(bundle):
    r = in_namespace("delete", bundle["path"], "--timeout", "240", "-o", "json")
    assert r.returncode == 0, r.stderr
    results = {(d["kind"], d["name"]): d["result"] for d in json.loads(r.stdout)}
    assert (
        results[("Deployment", "web")] == "deleted" and results[("Pod", "init-demo")] == "deleted"
    )
    assert [d["kind"] for d in json.loads(r.stdout)][-1] == "ConfigMap"  # dependents first
    left = kubectl("get", "deploy,sts,ds,job,cronjob,pod,svc,cm", "-n", E.namespace, "-o", "name")
    names = left.stdout.split()
    for gone in (
        "deployment.apps/web",
        "statefulset.apps/db",
        "daemonset.apps/agent",
        "job.batch/once",
        "cronjob.batch/tick",
        "pod/init-demo",
        "configmap/app-config",
    ):
        assert gone not in names, names
    assert not [n for n in names if n.startswith("pod/web-") or n.startswith("pod/agent-")]
    r = in_namespace("delete", bundle["path"], "-o", "json")
    assert r.returncode == 0, r.stderr
    assert {d["result"] for d in json.loads(r.stdout)} == {"not found"}
    kubectl("delete", "namespace", E.namespace, "--wait=false")
