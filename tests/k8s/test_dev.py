"""`floxk dev` on a real kind cluster, run as a user runs it (a subprocess, its output read):
a Deployment of 2 replicas on an environment; a [vars] edit reaches both pods; a TOML break
is reported with its line while the pods keep the old generation; a package added becomes
runnable in the pods; Ctrl-C stops watching and leaves the cluster as it is.

Marker k8s; run by `task test:k8s` (FLOXK_E2E_KIND=1) once the kind node image is built.
A private KUBECONFIG: other clusters made on this machine meanwhile do not move the
current context under the test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.k8s.conftest import BASE_IMAGE, PrivateKube, require_kind_base
from tests.manifests import workload

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_DEV_CLUSTER", "floxk-dev-loop")
CONTEXT = f"kind-{NAME}"
ENV = "devloop/app"
MANIFEST = """\
version = 1
[install]
busybox.pkg-path = "busybox"
[vars]
GREETING = "%s"
"""
DEPLOYMENT = workload("Deployment", "app", """\
terminationGracePeriodSeconds: 1
containers:
  - name: app
    command: [sh, -c, 'echo "greeting=$GREETING"; exec sleep 3600']
""", app="devloop", replicas=2, annotations=f"{{flox.dev/environment: {ENV}}}")  # fmt: skip


K = PrivateKube(CONTEXT, floxk_timeout=1800, kubectl_timeout=120)
floxk, kubectl, _environ = K.floxk, K.kubectl, K.environ


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    require_kind_base()
    K.kubeconfig = tmp_path_factory.mktemp("dev") / "kubeconfig"
    clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True)
    if NAME in clusters.stdout.split():  # kept from a run with FLOXK_E2E_KEEP=1
        subprocess.run(["kind", "export", "kubeconfig", "--name", NAME], env=_environ(), check=True)
    r = floxk("up", "--name", NAME, "--base-image", BASE_IMAGE, "--timeout", "600", "-o", "json")
    assert r.returncode == 0, r.stderr
    yield CONTEXT
    if os.environ.get("FLOXK_E2E_KEEP") != "1":
        assert floxk("down", "--name", NAME).returncode == 0


class Dev:
    """`floxk dev` running in the background; its stdout (logs) and stderr (progress) in files."""

    def __init__(self, tmp: Path, env_dir: Path, manifests: Path, *args: str) -> None:
        self.out, self.err = tmp / "dev.out", tmp / "dev.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "floxk", "dev", str(env_dir), "-f", str(manifests)]
            + ["--context", CONTEXT, "--timeout", "240", *args],
            stdout=self.out.open("w"),
            stderr=self.err.open("w"),
            stdin=subprocess.DEVNULL,
            env=_environ(),
        )

    def stderr(self) -> str:
        return self.err.read_text()

    def stdout(self) -> str:
        return self.out.read_text()

    def wait_for(self, text: str, *, after: int = 0, timeout: float = 300) -> int:
        """Until `text` appears in stderr past offset `after`; returns the offset past it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            err = self.stderr()
            at = err.find(text, after)
            if at >= 0:
                return at + len(text)
            assert self.proc.poll() is None, f"floxk dev exited {self.proc.returncode}:\n{err}"
            time.sleep(0.3)
        raise AssertionError(f"{text!r} not seen in {timeout} s:\n{self.stderr()}")


def _pods() -> list[dict]:
    """The Deployment's live pods (not terminating)."""
    items = json.loads(kubectl("get", "pods", "-l", "app=devloop", "-o", "json").stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _generation(pod: dict) -> str | None:
    return pod["metadata"].get("annotations", {}).get("floxk.dev/generation")


def _greeting(pod: str) -> str | None:
    """GREETING as `kubectl exec` sees it (the runtime adds the environment to an exec)."""
    for line in kubectl("exec", pod, "--", "env").stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "GREETING":
            return value
    return None


def _ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def _save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_edit_reaches_the_pods(cluster, catalog_flake, tmp_path):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    manifest = env_dir / "manifest.toml"
    manifest.write_text(MANIFEST % "one")
    # locked once by the user with the catalog; floxk dev keeps using that catalog
    assert floxk("env", "lock", str(env_dir), "--catalog", f"path:{catalog_flake}").returncode == 0
    manifests = tmp_path / "app.yaml"
    manifests.write_text(DEPLOYMENT)
    dev = Dev(tmp_path, env_dir, manifests)
    try:
        # generation 1 published, both pods Ready on it, their logs streamed per pod
        at = dev.wait_for("published devloop/app:")
        gen1 = int(dev.stderr()[at:].split()[0])
        at = dev.wait_for(f"generation {gen1} ready", after=at)
        first = _pods()
        assert len(first) == 2 and all(_ready(p) for p in first)
        assert {_generation(p) for p in first} == {str(gen1)}
        for p in first:
            assert "greeting=one" in kubectl("logs", p["metadata"]["name"]).stdout
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = dev.stdout()
            if all(f"{p['metadata']['name']} app │ greeting=one" in out for p in first):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"pod logs not streamed:\n{dev.stdout()}")

        # a [vars] edit: a new generation, both pods replaced and on it
        _save(manifest, MANIFEST % "two")
        gen2 = gen1 + 1
        at = dev.wait_for(f"published devloop/app:{gen2}", after=at)
        at = dev.wait_for(f"generation {gen2} ready", after=at)
        second = _pods()
        assert len(second) == 2 and all(_ready(p) for p in second)
        assert {_generation(p) for p in second} == {str(gen2)}
        assert not {p["metadata"]["name"] for p in first} & {p["metadata"]["name"] for p in second}
        for p in second:
            name = p["metadata"]["name"]
            assert _greeting(name) == "two"

        # a TOML break: reported with its line and key; nothing pushed; the pods stay
        _save(manifest, (MANIFEST % "three").replace('GREETING = "three"', "GREETING = three"))
        at = dev.wait_for("error (manifest)", after=at)
        report = dev.stderr()[at - len("error (manifest)") :]
        assert "line 5" in report and "GREETING" in report, report
        assert f"the pods keep generation {gen2}" in report
        time.sleep(3)
        assert _latest_generation() == gen2
        kept = _pods()
        assert {p["metadata"]["name"] for p in kept} == {p["metadata"]["name"] for p in second}
        assert all(_ready(p) for p in kept)

        # fixed, and a package added: it runs in both pods
        _save(manifest, (MANIFEST % "three").replace("[vars]", 'hello.pkg-path = "hello"\n[vars]'))
        gen3 = gen2 + 1
        at = dev.wait_for(f"published devloop/app:{gen3}", after=at)
        at = dev.wait_for(f"generation {gen3} ready", after=at)
        third = _pods()
        assert len(third) == 2 and {_generation(p) for p in third} == {str(gen3)}
        for p in third:
            name = p["metadata"]["name"]
            assert kubectl("exec", name, "--", "hello").stdout.strip() == "hello from floxk"
            assert _greeting(name) == "three"

        # Ctrl-C: stops watching, exit 0, the cluster as it was
        dev.proc.send_signal(signal.SIGINT)
        assert dev.proc.wait(60) == 0, dev.stderr()
        assert "stopped watching; the cluster is left as it is" in dev.stderr()
        after = _pods()
        assert {p["metadata"]["name"] for p in after} == {p["metadata"]["name"] for p in third}
    finally:
        if dev.proc.poll() is None:
            dev.proc.kill()
        print(f"--- floxk dev stderr\n{dev.stderr()}\n--- stdout\n{dev.stdout()}", file=sys.stderr)
        kubectl("delete", "deployment", "app", "--ignore-not-found", "--wait=false", check=False)


def test_a_pod_failing_in_the_runtime_is_reported(cluster, catalog_flake, tmp_path):
    """A workload whose environment the node cannot find: the pod's events (the runtime's
    `floxk:` message) are shown, and the loop goes on."""
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / "manifest.toml").write_text(MANIFEST % "ghost")
    assert floxk("env", "lock", str(env_dir), "--catalog", f"path:{catalog_flake}").returncode == 0
    manifests = tmp_path / "app.yaml"
    manifests.write_text(
        DEPLOYMENT.replace(ENV, "devloop/missing")
        .replace("name: app}", "name: ghost}")
        .replace("app: devloop", "app: ghost")
        .replace("replicas: 2", "replicas: 1")
    )
    dev = Dev(tmp_path, env_dir, manifests, "--name", "devloop/ghost")
    try:
        dev.wait_for("published devloop/ghost:")
        at = dev.wait_for("error (pod)", timeout=300)
        report = dev.stderr()[at:]
        assert "floxk:" in report, report
        assert dev.proc.poll() is None  # the loop goes on
    finally:
        dev.proc.send_signal(signal.SIGINT)
        try:
            dev.proc.wait(60)
        except subprocess.TimeoutExpired:
            dev.proc.kill()
        print(f"--- floxk dev stderr\n{dev.stderr()}", file=sys.stderr)
        kubectl("delete", "deployment", "ghost", "--ignore-not-found", "--wait=false", check=False)


def _hub_url() -> str:
    from floxk._cluster.spec import cluster_files

    return cluster_files("kind", NAME).hub_url


def _latest_generation() -> int:
    from shim.core import hub

    return hub.fetch(ENV, [_hub_url()], None).generation
