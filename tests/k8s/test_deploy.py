"""`floxk shim deploy` onto a plain kind cluster (no floxk in its node image), then undeploy.

The cluster is what an operator already has: kindest/node, no python3, no Nix, no flox
runtime. A hub directory on this machine is mounted into the node at the same path; the
operator's node.toml (given to deploy) points at it. Marker k8s; run with
`FLOXK_E2E_KIND=1 pytest tests/k8s/test_deploy.py -m k8s`. Takes a few minutes.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.k8s.conftest import hub_kind_cluster, lock_and_push, run_floxk, sh

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_DEPLOY_CLUSTER", "floxk-deploy")
NODE = f"{NAME}-control-plane"


def node_file(path: str) -> str | None:
    r = sh("docker", "exec", NODE, "cat", path, check=False)
    return r.stdout if r.returncode == 0 else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A plain kind cluster; yields (env for subprocesses with its KUBECONFIG, hub dir, keys)."""
    with hub_kind_cluster(NAME, tmp_path_factory.mktemp("deploy"), "floxk-deploy-test-1") as c:
        yield c


def floxk(*args: str, env, timeout: float = 900):
    return run_floxk(*args, env=env, timeout=timeout)


def test_deploy_run_undeploy(cluster, catalog_flake):
    env, hub, work = cluster["env"], cluster["hub"], cluster["work"]
    original = node_file("/etc/containerd/config.toml")
    assert original and "runtimes.flox" not in original
    assert sh("docker", "exec", NODE, "sh", "-c", "command -v python3", check=False).returncode != 0

    (work / "node.toml").write_text(
        f'hubs = ["file://{hub}"]\ntrusted_public_keys = ["{cluster["public"]}"]\n'
    )
    r = floxk("shim", "deploy", "--kubeconfig", env["KUBECONFIG"], "--load-into-kind", NAME,
              "--node-config", str(work / "node.toml"), "-o", "json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert [(n["name"], n["state"]) for n in result["nodes"]] == [(NODE, "provisioned")]
    labels = json.loads(sh("kubectl", "get", "node", NODE, "-o", "json", env=env).stdout)[
        "metadata"
    ]["labels"]
    assert labels["flox.dev/shim"] == "provisioned" and labels["flox.dev/enabled"] == "true"
    dump = sh("docker", "exec", NODE, "containerd", "config", "dump").stdout
    assert "runtimes.flox]" in dump
    assert node_file("/etc/floxk/node.toml") == (work / "node.toml").read_text()

    # A second deploy re-runs the agent: nothing changes, the node stays provisioned.
    r = floxk("shim", "deploy", "--kubeconfig", env["KUBECONFIG"], "--load-into-kind", NAME,
              "--node-config", str(work / "node.toml"), "-o", "json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["image_built"] is False

    # A flox pod from an environment pushed to the node's hub.
    manifest = 'version = 1\n[install]\nhello.pkg-path = "hello"\n[vars]\nGREETING = "deployed"\n'
    r = lock_and_push(work / "env", manifest, catalog_flake, "--name", "deploy/hello",
                 "--to", f"file://{hub}", "--signing-key", str(cluster["secret"]), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = floxk("run", "pod", "deploy-hello", "--env", "deploy/hello", "--replace",
              "--context", f"kind-{NAME}", "--", "hello", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hello from floxk" in r.stdout
    sh("kubectl", "delete", "pod", "deploy-hello", "--wait=false", env=env, check=False)

    r = floxk("shim", "undeploy", "--kubeconfig", env["KUBECONFIG"], "--load-into-kind", NAME,
              "-o", "json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert node_file("/etc/containerd/config.toml") == original
    assert node_file("/etc/floxk/node.toml") is None
    assert sh("kubectl", "get", "runtimeclass", "flox", env=env, check=False).returncode != 0
    labels = json.loads(sh("kubectl", "get", "node", NODE, "-o", "json", env=env).stdout)[
        "metadata"
    ]["labels"]
    assert "flox.dev/shim" not in labels and "flox.dev/enabled" not in labels
    ns = sh("kubectl", "get", "namespace", "floxk-system", "-o", "json", env=env, check=False)
    assert ns.returncode != 0 or json.loads(ns.stdout)["status"]["phase"] == "Terminating"
