"""A deployed kind node that runs for a while: the deployer's DaemonSet runs the periodic GC,
pods see only their own closure, containerd restarted by systemd under a running flox pod,
and the deployer rolled to a new image with the pod still running.

The cluster (named floxk-nodes, deleted after) is a plain kindest/node with `floxk shim
deploy`, as in test_deploy.py. The new image is built from a copy of this checkout stamped
with another version (shim.__version__): the same code, a different image, and each
create's node-log event names the version that made it. Marker k8s; run with
`FLOXK_E2E_KIND=1 pytest tests/k8s/test_node_ops.py -m k8s`. Takes several minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest

from tests.k8s.conftest import hub_kind_cluster, lock_and_push, run_pod, sh

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_NODES_CLUSTER", "floxk-nodes")
NODE = f"{NAME}-control-plane"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEW_VERSION = "0.1.1.dev1"  # a Docker tag: no "+"
TICKER = ["sh", "-c", 'echo started; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 1; done']


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with hub_kind_cluster(NAME, tmp_path_factory.mktemp("nodes"), "floxk-nodes-test-1") as c:
        yield c


def floxk(*args, env, timeout: float = 900):
    # -P: no working directory on sys.path, so PYTHONPATH decides which checkout runs
    return sh(sys.executable, "-P", "-m", "floxk", *args, env=env, timeout=timeout, check=False)


def on_node(*argv: str, check: bool = True):
    return sh("docker", "exec", NODE, *argv, check=check)


def kubectl(*args: str, env, check: bool = True):
    return sh("kubectl", *args, env=env, check=check)


def deploy(cluster, *, env=None):
    env = env or cluster["env"]
    r = floxk("shim", "deploy", "--kubeconfig", env["KUBECONFIG"], "--load-into-kind", NAME,
              "--node-config", str(cluster["work"] / "node.toml"), "-o", "json",
              env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert [(n["name"], n["state"]) for n in result["nodes"]] == [(NODE, "provisioned")]
    return result


def push(cluster, catalog_flake, name: str, install: str) -> None:
    env, work = cluster["env"], cluster["work"]
    lock_and_push(work / name.replace("/", "-"), f"version = 1\n[install]\n{install}", catalog_flake,
             "--name", name, "--to", f"file://{cluster['hub']}",
             "--signing-key", str(cluster["secret"]), floxk=floxk, env=env)  # fmt: skip


def pod_state(name: str, env) -> dict:
    pod = json.loads(kubectl("get", "pod", name, "-o", "json", env=env).stdout)
    (status,) = pod["status"]["containerStatuses"]
    return {"id": status.get("containerID"), "restarts": status["restartCount"],
            "running": "running" in status["state"]}  # fmt: skip


def node_events(kind: str) -> list[dict]:
    out = on_node("cat", "/var/lib/floxk/floxk.log").stdout
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [e for e in events if e["event"] == kind]


def until(what: str, check, timeout: float = 120):
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(2)


def test_node_operations(cluster, catalog_flake, tmp_path):
    env, work = cluster["env"], cluster["work"]
    # Every bit of disk counts as pressure, so each periodic GC frees every unused tree.
    (work / "node.toml").write_text(
        f'hubs = ["file://{cluster["hub"]}"]\ntrusted_public_keys = ["{cluster["public"]}"]\n'
        '[gc]\nhigh_percent = 1\nlow_percent = 1\nmin_unused_age = "0s"\ninterval = "5s"\n'
    )
    first = deploy(cluster)
    # On clusters the DaemonSet is the periodic GC: no systemd timer on the node.
    assert on_node("test", "-e", "/etc/systemd/system/floxk-gc.timer", check=False).returncode
    push(cluster, catalog_flake, "nodes/keep", 'hello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n')  # fmt: skip
    push(cluster, catalog_flake, "nodes/gone", 'greeting.pkg-path = "greeting"\n')

    # A pod that ran and is gone, and one that keeps running.
    r = run_pod("gone", "nodes/gone", f"kind-{NAME}", "--replace", command=["greet", "bye"],
                floxk=floxk, env=env)  # fmt: skip
    assert r.returncode == 0 and "greet: bye" in r.stdout, r.stderr[-2000:]
    kubectl("delete", "pod", "gone", "--wait=true", env=env)
    r = run_pod("keeper", "nodes/keep", f"kind-{NAME}", "--no-wait", command=TICKER, floxk=floxk,
                env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    kubectl("wait", "--for=condition=Ready", "pod/keeper", "--timeout=180s", env=env)
    keeper = pod_state("keeper", env)

    # The store view: the running pod sees its closure, not the other environment's path.
    listing = kubectl("exec", "keeper", "--", "ls", "/nix/store", env=env).stdout.split()
    assert any("-hello-" in n for n in listing) and not any("-greeting-" in n for n in listing)

    # The DaemonSet's GC frees the unused environment and keeps the running one.
    def collected():
        left = on_node("ls", "/var/lib/floxk/envs").stdout.split()
        store = on_node("ls", "/nix/store").stdout
        return len(left) == 1 and "-greeting-" not in store

    until("the periodic GC to free nodes/gone", collected)

    # The last GC may be the one after a realization; the periodic one comes every 5 s.
    def last_gc():
        last = json.loads(on_node("cat", "/var/lib/floxk/gc-last.json").stdout)
        return last if last["reason"] == "timer" else None

    assert until("a periodic GC", last_gc, timeout=60)["kept_in_use"]
    logs = kubectl("logs", "-n", "floxk-system", "-l", "app.kubernetes.io/name=floxk-installer",
                   "--tail=-1", env=env).stdout  # fmt: skip
    assert "periodic GC every 5 s" in logs and "gc: ran=True" in logs, logs[-2000:]
    assert kubectl("exec", "keeper", "--", "hello", env=env).stdout == "hello from floxk\n"

    # containerd restarted by systemd under the running pod: it keeps running; exec and
    # logs work.
    on_node("systemctl", "restart", "containerd")
    until("containerd back", lambda: on_node("ctr", "version", check=False).returncode == 0)
    assert pod_state("keeper", env) == keeper
    assert kubectl("exec", "keeper", "--", "hello", env=env).stdout == "hello from floxk\n"
    before = kubectl("logs", "keeper", env=env).stdout
    assert before.startswith("started\n")
    until("new log lines", lambda: len(kubectl("logs", "keeper", env=env).stdout) > len(before))

    # The deployer rolled to a new image (a new build of the node side).
    new = tmp_path / "checkout"
    shutil.copytree(REPO, new, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "results"))  # fmt: skip
    init = new / "shim" / "__init__.py"
    old_version = init.read_text().split('__version__ = "')[1].split('"')[0]
    init.write_text(init.read_text().replace(f'"{old_version}"', f'"{NEW_VERSION}"'))
    rolled = deploy(cluster, env={**env, "PYTHONPATH": str(new)})
    # The tag is content-addressed: a warm Docker may hold it from an earlier run, so what
    # counts is that the deployer moved to the new build's image, not that it built it now.
    assert NEW_VERSION in rolled["image"] and rolled["image"] != first["image"], rolled
    version = on_node(
        "/usr/bin/python3", "-I", "-S", "/usr/lib/floxk/floxk-runc", "--floxk-version"
    )
    assert NEW_VERSION in version.stdout
    assert pod_state("keeper", env) == keeper
    assert kubectl("exec", "keeper", "--", "hello", env=env).stdout == "hello from floxk\n"
    r = floxk("run", "pod", "after", "--env", "nodes/keep", "--replace", "--context",
              f"kind-{NAME}", "--", "hello", env=env)  # fmt: skip
    assert r.returncode == 0 and "hello from floxk" in r.stdout, r.stderr[-2000:]
    versions = [e.get("floxk") for e in node_events("create")]
    assert versions[0] == old_version and versions[-1] == NEW_VERSION, versions
    # Stop works on the pod created before the restart and the roll.
    kubectl("delete", "pod", "keeper", "after", "--wait=true", "--timeout=120s", env=env)
    assert not kubectl("get", "pods", "-o", "name", env=env).stdout.strip()
