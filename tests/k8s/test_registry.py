"""`floxk up --registry`: an image pushed to the cluster's local registry runs next to a flox
pod in the same cluster. Real kind, real distribution registry (built by
clusters/helm/build-tools.sh), real `docker push`; marker k8s (`task test:k8s`, minutes).

The registry container (floxk-registry) is shared by every floxk cluster on this Engine; the
test removes it only when it created it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time

import pytest

from tests.k8s.conftest import BASE_IMAGE, floxk_up_fresh, require_kind_base, run_floxk, run_kubectl

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_REGISTRY_CLUSTER", "floxk-registry-test")
CONTEXT = f"kind-{NAME}"
IMAGE = "localhost:5001/floxk-test/busybox:1"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def floxk(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_floxk(*args, timeout=timeout)


def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_kubectl(CONTEXT, *args, check=check)


@pytest.fixture(scope="module")
def cluster():
    require_kind_base()
    import docker
    import docker.errors

    subprocess.run(["bash", os.path.join(ROOT, "clusters", "helm", "build-tools.sh")],
                   check=True, capture_output=True, timeout=1800)  # fmt: skip
    client = docker.from_env()
    try:
        client.containers.get("floxk-registry")
        ours = False
    except docker.errors.NotFound:
        ours = True
    result = floxk_up_fresh("--name", NAME, "--registry", timeout=1200)
    assert result["registry"]["push"] == "localhost:5001"
    yield client
    floxk("down", "--name", NAME)
    if ours:
        client.containers.get("floxk-registry").remove(force=True)


def test_second_up_keeps_the_registry(cluster):
    r = floxk("up", "--name", NAME, "--base-image", BASE_IMAGE, "--registry", "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["created"] is False and out["registry"]["container"] == "floxk-registry"
    cm = kubectl("-n", "kube-public", "get", "configmap", "local-registry-hosting", "-o", "json")
    assert 'host: "localhost:5001"' in json.loads(cm.stdout)["data"]["localRegistryHosting.v1"]


def test_pushed_image_runs_next_to_a_flox_pod(cluster, catalog_flake, tmp_path):
    client = cluster
    # An image of our own (static busybox, FROM scratch), pushed as a user would.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "sleep", "echo"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    repo, tag = IMAGE.rsplit(":", 1)
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    for line in client.images.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    # Not in the node: the pod can only get it from the registry.
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "from-registry"},
        "spec": {"containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "Always",
                                 "command": ["sh", "-c", "echo image-pod-ran; exec sleep 3600"]}]},
    }  # fmt: skip
    (tmp_path / "pod.json").write_text(json.dumps(pod))
    kubectl("apply", "-f", str(tmp_path / "pod.json"))
    # A flox pod beside it, from the cluster's dev hub.
    env = tmp_path / "env"
    env.mkdir()
    (env / "manifest.toml").write_text(
        'version = 1\n[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n'
    )
    assert floxk("env", "lock", str(env), "--catalog", f"path:{catalog_flake}").returncode == 0
    assert floxk("env", "push", str(env), "--name", "reg/hello").returncode == 0
    r = floxk("run", "pod", "flox-beside", "--env", "reg/hello", "--replace",
              "--context", CONTEXT, "--", "hello")  # fmt: skip
    assert r.returncode == 0 and "hello from floxk" in r.stdout, r.stderr
    kubectl("wait", "--for=condition=Ready", "pod/from-registry", "--timeout=240s")
    deadline = time.monotonic() + 30
    while "image-pod-ran" not in (logs := kubectl("logs", "from-registry").stdout):
        assert time.monotonic() < deadline, logs
        time.sleep(1)
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=from-registry",
                     "-o", "json")  # fmt: skip
    messages = [e["message"] for e in json.loads(events.stdout)["items"]]
    assert any("Successfully pulled image" in m and IMAGE in m for m in messages), messages
    kubectl("delete", "pod", "from-registry", "--wait=false")
