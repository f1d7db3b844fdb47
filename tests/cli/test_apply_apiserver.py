"""`floxk apply` / `floxk delete` and every Kubernetes API failure against a real API
server: kube-apiserver, etcd and kube-controller-manager as built for the offline kind
node image (`task kind:image` leaves them in $FLOXK_CACHE/kind), run here as plain
processes in the test's temp dir. No nodes: pods stay Pending, so workloads are applied
and followed to a timeout (exit 5); running them is tests/k8s/test_apply.py's part.
Skipped, with the reason, where those binaries have not been built."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from floxk._cluster.spec import cache_dir
from testkit.net import free_port
from tests.manifests import workload

# Its kubeconfig skips TLS verification (a throwaway server in the temp dir).
pytestmark = pytest.mark.filterwarnings("ignore:Unverified HTTPS request")

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {k: v1}\n"
DEPLOYMENT = workload(
    "Deployment", "web", "containers: [{name: web, command: [web-serve]}]\n", replicas=1
)
JOB = """\
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: once, command: [hello]}]
"""


def _binary(pattern: str) -> Path | None:
    root = cache_dir() / "kind"
    found = sorted(
        p
        for p in root.glob(pattern)
        if p.is_file() and not any(part.endswith((".tmp", ".partial")) for part in p.parts)
    )
    return found[-1] if found else None


class ApiServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.kubeconfig = root / "kubeconfig"

    def start(self, argv: list[str], log: str) -> None:
        out = open(self.root / log, "wb")  # noqa: SIM115 - kept open for the process's life
        self.procs.append(
            subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    apiserver_bin = _binary("k8s-v*/kube-apiserver")
    kcm_bin = _binary("k8s-v*/kube-controller-manager")
    etcd_bin = _binary("components-*/etcd")
    if not (apiserver_bin and kcm_bin and etcd_bin):
        pytest.skip(
            "needs kube-apiserver, kube-controller-manager and etcd from the offline kind "
            f"build in {cache_dir() / 'kind'} (task kind:image)"
        )
    root = tmp_path_factory.mktemp("apiserver")
    server = ApiServer(root)
    for name in ("sa.key",):
        subprocess.run(["openssl", "genrsa", "-out", root / name, "2048"], check=True,
                       capture_output=True)  # fmt: skip
    subprocess.run(["openssl", "rsa", "-in", root / "sa.key", "-pubout", "-out", root / "sa.pub"],
                   check=True, capture_output=True)  # fmt: skip
    (root / "tokens.csv").write_text('admintoken,admin,1,"system:masters"\nlimitedtoken,dev,2\n')
    etcd, peer, api = free_port(), free_port(), free_port()
    server.start(
        [str(etcd_bin), "--data-dir", str(root / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{etcd}",
         "--advertise-client-urls", f"http://127.0.0.1:{etcd}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}"],
        "etcd.log",
    )  # fmt: skip
    server.start(
        [str(apiserver_bin), "--etcd-servers", f"http://127.0.0.1:{etcd}",
         "--bind-address", "127.0.0.1", "--secure-port", str(api),
         "--cert-dir", str(root / "certs"), "--token-auth-file", str(root / "tokens.csv"),
         "--authorization-mode", "RBAC",
         "--service-account-key-file", str(root / "sa.pub"),
         "--service-account-signing-key-file", str(root / "sa.key"),
         "--service-account-issuer", "https://kubernetes.default.svc",
         "--service-cluster-ip-range", "10.0.0.0/24",
         # No node network here: a non-loopback address the endpoint reconciler skips.
         "--advertise-address", "10.0.0.1", "--endpoint-reconciler-type", "none"],
        "apiserver.log",
    )  # fmt: skip
    server.kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: admin\n"
        f"clusters: [{{name: local, cluster: {{server: 'https://127.0.0.1:{api}', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: admin, user: {token: admintoken}}, "
        "{name: dev, user: {token: limitedtoken}}, {name: bad, user: {token: wrongtoken}}]\n"
        "contexts: [{name: admin, context: {cluster: local, user: admin}}, "
        "{name: limited, context: {cluster: local, user: dev}}, "
        "{name: bad, context: {cluster: local, user: bad}}]\n"
    )
    try:
        _wait_ready(server)
        server.start(
            [str(kcm_bin), "--kubeconfig", str(server.kubeconfig),
             "--service-account-private-key-file", str(root / "sa.key"),
             "--bind-address", "127.0.0.1", "--secure-port", "0", "--leader-elect=false"],
            "controller-manager.log",
        )  # fmt: skip
        yield server
    finally:
        server.stop()


def _wait_ready(server: ApiServer, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = _kubectl(server, "get", "--raw", "/readyz", check=False)
        if r.returncode == 0 and r.stdout.strip() == "ok":
            return
        time.sleep(1)
    raise AssertionError(
        f"kube-apiserver not ready: {(server.root / 'apiserver.log').read_text()[-2000:]}"
    )


def _kubectl(server, *args, check=True, stdin=None, context="admin"):
    r = subprocess.run(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), "--context", context, *args],
        capture_output=True, text=True, input=stdin, timeout=60,
    )  # fmt: skip
    if check:
        assert r.returncode == 0, r.stderr
    return r


def floxk(server, *args, stdin=None, context="admin", timeout=120):
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "FLOXK_CACHE": str(server.root)}
    r = subprocess.run(
        [sys.executable, "-m", "floxk", *args, "--context", context],
        capture_output=True, text=True, input=stdin, env=env, timeout=timeout,
    )  # fmt: skip
    print(f"$ floxk {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}", file=sys.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _exists(server, kind: str, name: str, ns: str) -> bool:
    return _kubectl(server, "get", kind, name, "-n", ns, check=False).returncode == 0


def test_without_the_flox_runtime_nothing_is_applied(apiserver):
    r = floxk(apiserver, "apply", "-f", "-", "--env", "a/b", "-n", "default",
              stdin=CONFIGMAP + "---\n" + DEPLOYMENT)  # fmt: skip
    assert r.returncode == 1 and "has no RuntimeClass flox" in r.stderr
    assert "floxk shim deploy" in r.stderr
    assert not _exists(apiserver, "configmap", "settings", "default")
    _kubectl(apiserver, "apply", "-f", "-", stdin=json.dumps(_runtime_class()))


def _runtime_class() -> dict:
    from floxk._cluster import kube

    return kube.runtime_class()


def test_apply_creates_then_changes_nothing_then_configures(apiserver):
    text = CONFIGMAP + "---\n" + DEPLOYMENT
    r = floxk(apiserver, "apply", "-f", "-", "--env", "alice/web", "-n", "app", "--no-wait",
              "-o", "json", stdin=text)  # fmt: skip
    assert r.returncode == 0, r.stderr
    applied = [(a["kind"], a["action"]) for a in json.loads(r.stdout)["applied"]]
    assert applied == [("Namespace", "created"), ("ConfigMap", "created"),
                       ("Deployment", "created")]  # fmt: skip
    dep = json.loads(
        _kubectl(
            apiserver, "get", "deploy", "web", "-n", "app", "-o", "json", "--show-managed-fields"
        ).stdout
    )
    assert dep["spec"]["template"]["spec"]["runtimeClassName"] == "flox"
    assert {m["manager"] for m in dep["metadata"]["managedFields"]} >= {"floxk"}
    r = floxk(apiserver, "apply", "-f", "-", "--env", "alice/web", "-n", "app", "--no-wait",
              "-o", "json", stdin=text)  # fmt: skip
    assert {a["action"] for a in json.loads(r.stdout)["applied"]} == {"unchanged"}
    r = floxk(apiserver, "apply", "-f", "-", "--env", "alice/web", "-n", "app", "--no-wait",
              stdin=text.replace("k: v1", "k: v2"))  # fmt: skip
    assert "ConfigMap app/settings configured" in r.stdout
    assert "Deployment app/web unchanged" in r.stdout


def test_following_without_nodes_times_out_with_exit_5(apiserver):
    r = floxk(apiserver, "apply", "-f", "-", "--env", "alice/web", "-n", "app",
              "--timeout", "8", stdin=DEPLOYMENT)  # fmt: skip
    assert r.returncode == 5, r.stderr
    assert "no outcome after 8 s for Deployment app/web" in r.stderr
    assert "rolling out" in r.stderr and "Pending" in r.stderr and "hint:" in r.stderr


def test_a_pod_in_a_new_namespace_waits_for_its_service_account(apiserver):
    pod = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: fresh}\n"
           "spec: {containers: [{name: a, command: [hello]}]}\n")  # fmt: skip
    r = floxk(apiserver, "apply", "-f", "-", "--env", "alice/web", "--no-wait", stdin=pod)
    assert r.returncode == 0, r.stderr
    assert _exists(apiserver, "pod", "p", "fresh")
    r = floxk(apiserver, "apply", "-f", "-", "--env", "a/b", "-n", "other", "--no-wait",
              stdin=pod)  # fmt: skip
    assert r.returncode == 1 and "in namespace 'fresh', not 'other' (-n)" in r.stderr


def test_404_missing_namespace_refused_and_from_the_server(apiserver):
    r = floxk(apiserver, "apply", "-f", "-", "-n", "nowhere", "--no-create-namespace",
              stdin=CONFIGMAP)  # fmt: skip
    assert r.returncode == 3 and "namespace nowhere does not exist" in r.stderr
    from floxk._cluster import kube

    api = kube.api_client("admin", config_file=str(apiserver.kubeconfig))
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "nowhere"}}  # fmt: skip
    with pytest.raises(kube.KubeError) as e:
        kube.apply(api, body)
    assert e.value.status == 404 and 'namespaces "nowhere" not found' in e.value.message
    assert e.value.exit_code == 3 and "--no-create-namespace" in e.value.hint


def test_403_forbidden_and_401_refused_credentials(apiserver):
    r = floxk(apiserver, "apply", "-f", "-", "-n", "app", stdin=CONFIGMAP, context="limited")
    assert r.returncode == 1
    assert 'User "dev" cannot' in r.stderr and "forbidden" in r.stderr
    assert "auth can-i" in r.stderr
    r = floxk(apiserver, "apply", "-f", "-", "-n", "app", stdin=CONFIGMAP, context="bad")
    assert r.returncode == 1 and "Unauthorized" in r.stderr
    assert "kind export kubeconfig" in r.stderr
    r = floxk(apiserver, "delete", "-f", "-", "-n", "app", stdin=CONFIGMAP, context="bad")
    assert r.returncode == 1 and "Unauthorized" in r.stderr


def test_409_conflict_with_another_field_manager(apiserver):
    _kubectl(apiserver, "create", "configmap", "shared", "-n", "app", "--from-literal=k=kubectl")
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {k: floxk}\n"
    r = floxk(apiserver, "apply", "-f", "-", "-n", "app", stdin=text)
    assert r.returncode == 1 and "conflict" in r.stderr.lower()
    assert "kubectl-create" in r.stderr and "--force-conflicts" in r.stderr
    r = floxk(apiserver, "apply", "-f", "-", "-n", "app", "--force-conflicts", stdin=text)
    assert r.returncode == 0, r.stderr
    out = _kubectl(apiserver, "get", "cm", "shared", "-n", "app", "-o", "jsonpath={.data.k}")
    assert out.stdout == "floxk"


def test_422_immutable_and_invalid_are_caught_before_anything_changes(apiserver):
    r = floxk(apiserver, "apply", "-f", "-", "--env", "a/b", "-n", "app", "--no-wait",
              stdin=JOB)  # fmt: skip
    assert r.returncode == 0, r.stderr
    changed = CONFIGMAP.replace("k: v1", "k: v3") + "---\n" + JOB.replace("[hello]", "[date]")
    r = floxk(apiserver, "apply", "-f", "-", "--env", "a/b", "-n", "app", "--no-wait",
              stdin=changed)  # fmt: skip
    assert r.returncode == 1 and 'Job.batch "once" is invalid' in r.stderr
    assert "immutable" in r.stderr and "floxk delete -f" in r.stderr
    assert r.stderr.startswith("error: -:") and "checking Job app/once" in r.stderr
    out = _kubectl(apiserver, "get", "cm", "settings", "-n", "app", "-o", "jsonpath={.data.k}")
    assert out.stdout != "v3"  # the ConfigMap before the Job was not applied
    bad = DEPLOYMENT.replace("replicas: 1", "replicas: -1")
    r = floxk(apiserver, "apply", "-f", "-", "--env", "a/b", "-n", "app", stdin=bad)
    assert r.returncode == 1 and "spec.replicas: Invalid value: -1" in r.stderr
    assert "kubectl explain" in r.stderr
    # An unquoted true where a string belongs: the server answers 500, the hint says why.
    r = floxk(apiserver, "apply", "-f", "-", "--env", "a/b", "-n", "app",
              stdin=DEPLOYMENT.replace("[web-serve]", "[true]"))  # fmt: skip
    assert r.returncode == 1 and "command[0]: expected string" in r.stderr
    assert "quote strings" in r.stderr


def test_a_kind_the_server_does_not_serve(apiserver):
    text = CONFIGMAP + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    r = floxk(apiserver, "apply", "-f", "-", "-n", "app", stdin=text)
    assert r.returncode == 3 and "-:6: the server does not know kind 'Widget'" in r.stderr
    assert "api-resources" in r.stderr


def test_delete_is_the_inverse_and_idempotent(apiserver):
    text = CONFIGMAP + "---\n" + DEPLOYMENT + "---\n" + JOB
    r = floxk(apiserver, "delete", "-f", "-", "-n", "app", "--timeout", "60", "-o", "json",
              stdin=text)  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = [(d["kind"], d["result"]) for d in json.loads(r.stdout)]
    assert result == [("Job", "deleted"), ("Deployment", "deleted"), ("ConfigMap", "deleted")]
    for kind, name in (("job", "once"), ("deploy", "web"), ("cm", "settings")):
        assert not _exists(apiserver, kind, name, "app")
    r = floxk(apiserver, "delete", "-f", "-", "-n", "app", "-o", "json", stdin=text)
    assert r.returncode == 0 and {d["result"] for d in json.loads(r.stdout)} == {"not found"}
