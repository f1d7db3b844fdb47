"""The Helm chart on a plain two-node kind cluster, the way an operator runs it.

Real helm (clusters/helm/build-tools.sh) and a real registry: the CNCF distribution
registry, built the same way, serving one storage directory on localhost:PORT in this
machine's network namespace (where `floxk shim image build --push` pushes) and, read-only,
on localhost:PORT inside each kind node's network namespace (where the node's containerd
pulls from, over plain HTTP as containerd does for localhost). No traffic leaves loopback.

helm install -> both nodes provisioned (image pulled from the registry) -> a flox pod on
each -> helm upgrade with another hub and a credentials Secret -> node.toml and
/etc/nix/netrc written on both nodes, containerd not restarted, the running pods
untouched, a pod from the new hub runs -> helm upgrade with a
hub no node has -> the first node rolled fails with the reason, the rollout stops, the
other node keeps its settings -> helm rollback -> helm uninstall -> containerd's config
files byte-identical on every node, labels, RuntimeClass, node.toml and netrc gone.

Marker k8s; `FLOXK_E2E_KIND=1 pytest tests/k8s/test_helm.py -m k8s`. Several minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib

import pytest
import yaml

from testkit.net import free_port
from testkit.nix import make_key_pair
from tests.k8s.conftest import BASE_IMAGE, lock_and_push, require_kind_base, sh

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_HELM_CLUSTER", "floxk-helm")
NODES = [f"{NAME}-control-plane", f"{NAME}-worker"]
NS = "floxk-system"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "clusters", "helm", "floxk-node")
MESSAGE = "flox.dev/shim-message"
CONTAINERD_FILES = "find /etc/containerd -type f | sort | xargs sha256sum"


def on_node(node: str, script: str, check: bool = True):
    return sh("docker", "exec", node, "sh", "-c", script, check=check)


def node_file(node: str, path: str) -> str | None:
    r = sh("docker", "exec", node, "cat", path, check=False)
    return r.stdout if r.returncode == 0 else None


class Registries:
    """One storage directory served by `registry` processes in several network namespaces."""

    def __init__(self, binary: str, work, port: int):
        self.binary, self.work, self.port, self.procs = binary, work, port, []
        (work / "storage").mkdir()

    def start(self, name: str, netns_pid: int | None, *, readonly: bool) -> None:
        config = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.work / "storage")},
                "maintenance": {"readonly": {"enabled": readonly}},
            },
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        cfg = self.work / f"{name}.yml"
        cfg.write_text(yaml.safe_dump(config))
        argv = [self.binary, "serve", str(cfg)]
        if netns_pid is not None:
            argv = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *argv]
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
        self.procs.append((subprocess.Popen(argv, stdout=log, stderr=log, env=env), log))
        probe = "" if netns_pid is None else f"nsenter --net=/proc/{netns_pid}/ns/net -- "
        for _ in range(50):
            r = subprocess.run(
                ["sh", "-c", f"{probe}python3 -c \"import urllib.request as u; "
                 f"u.urlopen('http://127.0.0.1:{self.port}/v2/')\""],
                capture_output=True,
            )  # fmt: skip
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"registry {name} did not come up: {self.log(name)}")

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text()

    def stop(self) -> None:
        for proc, log in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()


def helm_tools() -> str:
    out = sh("bash", os.path.join(ROOT, "clusters", "helm", "build-tools.sh"), timeout=1800)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_kind_base()
    tools = helm_tools()
    work = tmp_path_factory.mktemp("helm")
    hubs = {h: work / h for h in ("hub1", "hub2")}
    for d in hubs.values():
        d.mkdir()
    public, secret = make_key_pair(work / "keys", "floxk-helm-test-1")
    mounts = [
        {"hostPath": str(d), "containerPath": str(d), "readOnly": True} for d in hubs.values()
    ]
    config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [
            {"role": role, "labels": {"flox.dev/install": "true"}, "extraMounts": mounts}
            for role in ("control-plane", "worker")
        ],
    }
    (work / "kind.yaml").write_text(yaml.safe_dump(config))
    kubeconfig = work / "kubeconfig"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{tools}:{os.environ['PATH']}"}
    sh("kind", "delete", "cluster", "--name", NAME, check=False)  # a leftover of ours only
    registries = Registries(os.path.join(tools, "registry"), work, free_port())
    try:
        sh("kind", "create", "cluster", "--name", NAME, "--image", BASE_IMAGE,
           "--config", str(work / "kind.yaml"), "--kubeconfig", str(kubeconfig),
           "--wait", "300s")  # fmt: skip
        registries.start("host", None, readonly=False)
        for node in NODES:
            pid = int(sh("docker", "inspect", "-f", "{{.State.Pid}}", node).stdout)
            registries.start(node, pid, readonly=True)
        yield {
            "env": env, "work": work, "hubs": hubs, "public": public, "secret": secret,
            "registries": registries, "helm": os.path.join(tools, "helm"),
        }  # fmt: skip
    finally:
        registries.stop()
        if os.environ.get("FLOXK_E2E_KEEP") != "1":
            sh("kind", "delete", "cluster", "--name", NAME, check=False)


def floxk(*args: str, env, timeout: float = 900, check: bool = True):
    return sh(sys.executable, "-m", "floxk", *args, env=env, timeout=timeout, check=check)


def kubectl_json(*args: str, env) -> dict:
    return json.loads(sh("kubectl", *args, "-o", "json", env=env).stdout)


def node_labels(env) -> dict[str, dict]:
    items = kubectl_json("get", "nodes", env=env)["items"]
    return {n["metadata"]["name"]: n["metadata"] for n in items}


def wait_nodes(env, want: dict[str, str | None], timeout: float = 600) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        meta = node_labels(env)
        states = {n: (meta[n].get("labels") or {}).get("flox.dev/shim") for n in want}
        if states == want:
            return meta
        failed = [n for n, s in states.items() if s == "failed" and want[n] != "failed"]
        assert not failed, {n: meta[n].get("annotations", {}).get(MESSAGE) for n in failed}
        assert time.monotonic() < deadline, f"nodes {states}, want {want}"
        time.sleep(3)


def containerd_pid(node: str) -> str:
    return on_node(node, "systemctl show -p MainPID --value containerd").stdout.strip()


def values_file(work, name: str, hubs: list[str], public: str, **extra) -> str:
    path = work / f"{name}.yaml"
    values = {"node": {"hubs": hubs, "trustedPublicKeys": [public]}, **extra}
    path.write_text(yaml.safe_dump(values))
    return str(path)


def flox_pod(name: str, node: str, env_ref: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": {"flox.dev/environment": env_ref}},
        "spec": {
            "runtimeClassName": "flox", "nodeName": node, "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "flox/empty:1.0.0",
                            "command": ["sh", "-c", "echo started $GREETING; exec sleep 3600"]}],
        },
    })  # fmt: skip


def push_env(cluster, catalog_flake, hub: str, name: str, greeting: str) -> None:
    env, work = cluster["env"], cluster["work"]
    manifest = (
        'version = 1\n[install]\nbusybox.pkg-path = "busybox"\nhello.pkg-path = "hello"\n'
        f'[vars]\nGREETING = "{greeting}"\n'
    )
    lock_and_push(work / f"env-{hub}-{name.replace('/', '-')}", manifest, catalog_flake,
                  "--name", name, "--to", f"file://{cluster['hubs'][hub]}",
                  "--signing-key", str(cluster["secret"]), floxk=floxk, env=env)  # fmt: skip


def pod_running(env, name: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        pod = kubectl_json("get", "pod", name, env=env)
        statuses = pod["status"].get("containerStatuses") or []
        if statuses and "running" in statuses[0]["state"]:
            return pod
        assert pod["status"].get("phase") not in ("Failed", "Succeeded"), pod["status"]
        if time.monotonic() > deadline:
            sh("kubectl", "describe", "pod", name, env=env, check=False)
            raise AssertionError(f"pod {name} not running: {pod['status']}")
        time.sleep(2)


@pytest.mark.timeout(2700)  # two nodes install python3 + Nix, three rollouts, on 2 cores
def test_helm_install_upgrade_uninstall(cluster, catalog_flake):
    env, work, helm = cluster["env"], cluster["work"], cluster["helm"]
    hub1, hub2 = (f"file://{cluster['hubs'][h]}" for h in ("hub1", "hub2"))
    before = {n: on_node(n, CONTAINERD_FILES).stdout for n in NODES}
    assert all("floxk" not in b for b in before.values())
    for node in NODES:  # a plain node: no flox runtime
        assert "runtimes.flox" not in on_node(node, "containerd config dump").stdout
        assert on_node(node, "test -e /usr/lib/floxk", check=False).returncode != 0
    codename = json.loads(sh("kubectl", "get", "nodes", "-o", "json", env=env).stdout)["items"][0][
        "status"
    ]["nodeInfo"]["osImage"]
    from floxk._deploy import debian_codename

    # The installer image into "the user's registry".
    ref = f"localhost:{cluster['registries'].port}/floxk/installer:helm-test"
    r = floxk("shim", "image", "build", "--debian", debian_codename(codename), "--push", ref,
              "-o", "json", env=env)  # fmt: skip
    pushed = json.loads(r.stdout)
    assert pushed["pushed"] == ref and pushed["digest"].startswith("sha256:")
    # Flox pods name Flox's stub image; offline nodes get it from kind load.
    from floxk._cluster import nodeimage, up

    sh("kind", "load", "docker-image", up.ensure_stub_image(nodeimage.docker_client()),
       "--name", NAME)  # fmt: skip

    repo, tag = ref.rsplit(":", 1)
    image_args = ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
                  "--set", "image.pullPolicy=Always"]  # fmt: skip
    v1 = values_file(work, "v1", [hub1], cluster["public"])
    sh(helm, "install", "floxk-node", CHART, "-n", NS, "--create-namespace", "-f", v1,
       *image_args, env=env, timeout=900)  # fmt: skip
    meta = wait_nodes(env, {n: "provisioned" for n in NODES})  # fails at once on "failed"
    for node in NODES:
        assert meta[node]["labels"]["flox.dev/enabled"] == "true"
        assert "runtimes.flox]" in on_node(node, "containerd config dump").stdout
        assert _hubs(node_file(node, "/etc/floxk/node.toml")) == [hub1]
        # Each node's containerd pulled the image from the registry in its own namespace.
        assert f"/v2/floxk/installer/manifests/{tag}" in cluster["registries"].log(node)
    rc = kubectl_json("get", "runtimeclass", "flox", env=env)
    assert rc["handler"] == "flox" and rc["scheduling"]["nodeSelector"] == {
        "flox.dev/enabled": "true"
    }

    # A flox pod on each node, from hub1.
    push_env(cluster, catalog_flake, "hub1", "helm/one", "from-hub1")
    for i, node in enumerate(NODES):
        sh("kubectl", "apply", "-f", "-", input=flox_pod(f"one-{i}", node, "helm/one"), env=env)
    pods = {f"one-{i}": pod_running(env, f"one-{i}") for i in range(len(NODES))}
    for name in pods:
        assert "started from-hub1" in sh("kubectl", "logs", name, env=env).stdout
    ctrd = {n: containerd_pid(n) for n in NODES}
    ds_pods = {p["metadata"]["uid"] for p in kubectl_json(
        "get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=floxk-installer", env=env)["items"]}  # fmt: skip

    # helm upgrade: another hub. Every node rewrites node.toml; containerd's config is the
    # same, so containerd is not restarted; the running flox pods are untouched.
    netrc = "machine hub.test login floxk password secret\n"
    sh("kubectl", "-n", NS, "create", "secret", "generic", "hub-netrc",
       f"--from-literal=netrc={netrc}", env=env)  # fmt: skip
    v2 = values_file(work, "v2", [hub2, hub1], cluster["public"],
                     hubCredentials={"secretName": "hub-netrc"})  # fmt: skip
    sh(helm, "upgrade", "floxk-node", CHART, "-n", NS, "-f", v2, *image_args,
       "--wait", "--timeout", "10m", env=env, timeout=900)  # fmt: skip
    wait_nodes(env, {n: "provisioned" for n in NODES})
    new_pods = kubectl_json("get", "pods", "-n", NS, "-l",
                            "app.kubernetes.io/name=floxk-installer", env=env)["items"]  # fmt: skip
    assert not ds_pods & {p["metadata"]["uid"] for p in new_pods}  # the DaemonSet rolled
    for node in NODES:
        assert _hubs(node_file(node, "/etc/floxk/node.toml")) == [hub2, hub1]
        assert containerd_pid(node) == ctrd[node], "containerd restarted for a node.toml change"
        assert node_file(node, "/etc/nix/netrc") == netrc
        assert on_node(node, "stat -c %a /etc/nix/netrc").stdout.strip() == "600"
    for name, pod in pods.items():
        now = kubectl_json("get", "pod", name, env=env)
        assert now["metadata"]["uid"] == pod["metadata"]["uid"]
        (status,) = now["status"]["containerStatuses"]
        assert "running" in status["state"] and status["restartCount"] == 0
        r = sh("kubectl", "exec", name, "--", "sh", "-c", "echo $GREETING; hello", env=env)
        assert r.stdout.splitlines()[0] == "from-hub1" and "hello from floxk" in r.stdout
    push_env(cluster, catalog_flake, "hub2", "helm/two", "from-hub2")
    sh("kubectl", "apply", "-f", "-", input=flox_pod("two", NODES[1], "helm/two"), env=env)
    pod_running(env, "two")
    assert "started from-hub2" in sh("kubectl", "logs", "two", env=env).stdout

    # A hub that no node has: the first node the rollout reaches refuses it and says why;
    # its pod never gets Ready, so the rollout stops there and the other node keeps v2.
    bad = values_file(work, "bad", ["file:///nonexistent/floxk-hub"], cluster["public"])
    sh(helm, "upgrade", "floxk-node", CHART, "-n", NS, "-f", bad, *image_args, env=env)
    deadline = time.monotonic() + 300
    while True:
        meta = node_labels(env)
        states = {n: (meta[n].get("labels") or {}).get("flox.dev/shim") for n in NODES}
        if "failed" in states.values():
            break
        assert time.monotonic() < deadline, states
        time.sleep(3)
    time.sleep(20)  # room for a (wrong) rollout to reach the second node
    meta = node_labels(env)
    states = {n: (meta[n].get("labels") or {}).get("flox.dev/shim") for n in NODES}
    (failed,) = [n for n, s in states.items() if s == "failed"]
    (other,) = [n for n in NODES if n != failed]
    assert states[other] == "provisioned"
    message = meta[failed]["annotations"]["flox.dev/shim-message"]
    assert "no such directory on this node" in message and "/nonexistent/floxk-hub" in message
    assert "keeps its current settings" in message
    for node in NODES:  # nobody got the bad file
        assert _hubs(node_file(node, "/etc/floxk/node.toml")) == [hub2, hub1]
    for name in [*pods, "two"]:
        assert (
            "running"
            in kubectl_json("get", "pod", name, env=env)["status"]["containerStatuses"][0]["state"]
        )
    sh(helm, "rollback", "floxk-node", "2", "-n", NS, "--wait", "--timeout", "10m", env=env,
       timeout=900)  # fmt: skip
    wait_nodes(env, {n: "provisioned" for n in NODES})

    # helm uninstall: the pre-delete hook uninstalls on every node.
    sh("kubectl", "delete", "pod", *pods, "two", "--wait=true", "--timeout=120s", env=env)
    sh(helm, "uninstall", "floxk-node", "-n", NS, "--wait", "--timeout", "10m", env=env,
       timeout=900)  # fmt: skip
    meta = node_labels(env)
    for node in NODES:
        labels = meta[node].get("labels") or {}
        assert "flox.dev/shim" not in labels and "flox.dev/enabled" not in labels
        assert "flox.dev/shim-message" not in (meta[node].get("annotations") or {})
        assert on_node(node, CONTAINERD_FILES).stdout == before[node]
        assert node_file(node, "/etc/floxk/node.toml") is None
        assert node_file(node, "/etc/nix/netrc") is None
        assert "runtimes.flox" not in on_node(node, "containerd config dump").stdout
    assert sh("kubectl", "get", "runtimeclass", "flox", env=env, check=False).returncode != 0
    # The hooks deleted themselves; the namespace is helm's --create-namespace, left as helm does.
    assert kubectl_json("get", "daemonsets,jobs", "-n", NS, env=env)["items"] == []


def _hubs(node_toml: str) -> list[str]:
    return tomllib.loads(node_toml)["hubs"]
