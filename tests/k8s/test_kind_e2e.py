"""The real thing: `floxk up` a kind cluster, push an environment to its dev hub, run flox
pods from it, check status/doctor, `floxk down`. Marker k8s; run by `task test:k8s`
(FLOXK_E2E_KIND=1) once `task kind:image` has built kindest/node offline. Skipped with a
reason otherwise: it takes minutes and a Docker Engine."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.k8s.conftest import (
    BASE_IMAGE,
    HELLO_MANIFEST,
    fresh_cluster,
    lock_and_push,
    run_floxk,
    run_pod,
)

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_E2E_CLUSTER", "floxk-e2e")
CONTEXT = f"kind-{NAME}"


def floxk(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_floxk(*args, timeout=timeout)


@pytest.fixture(scope="module")
def cluster() -> str:
    with fresh_cluster("--provider", "kind", "--name", NAME, timeout=1200) as up:
        assert up["created"] is True
        yield CONTEXT


@pytest.fixture(scope="module")
def hello_env(cluster, catalog_flake, tmp_path_factory) -> str:
    """An environment (hello, busybox for sh, a var) pushed with `floxk env push` to the cluster's dev hub."""
    manifest = HELLO_MANIFEST + '[vars]\nGREETING = "hi from the environment"\n'
    directory = tmp_path_factory.mktemp("e2e-env")
    r = lock_and_push(
        directory, manifest, catalog_flake, "--name", "e2e/hello", "-o", "json"
    )  # no --to
    pushed = json.loads(r.stdout)
    assert pushed["signed"] and f"clusters/{cluster}/hub" in pushed["cache_url"]
    return "e2e/hello"


def test_second_up_changes_nothing(cluster):
    r = floxk("up", "--provider", "kind", "--name", NAME, "--base-image", BASE_IMAGE, "-o", "json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (result["created"], result["changed"], result["node_image_built"]) == (
        False,
        False,
        False,
    )


def test_kubectl_sees_ready_flox_nodes(cluster):
    out = subprocess.run(
        [
            "kubectl",
            "--context",
            cluster,
            "get",
            "nodes",
            "-l",
            "flox.dev/enabled=true",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() and set(out.split()) == {"True"}


def test_pod_runs_a_program_from_its_environment(cluster, hello_env):
    r = run_pod("e2e-hello", hello_env, cluster, "--replace", command=["hello"], floxk=floxk)
    assert r.returncode == 0, r.stderr
    assert "hello from floxk" in r.stdout


def test_pod_sees_the_environment_vars_and_exit_code(cluster, hello_env):
    script = 'echo "$GREETING"; exit 7'
    r = run_pod(
        "e2e-vars", hello_env, cluster, "--replace", command=["sh", "-c", script], floxk=floxk
    )
    assert r.returncode == 7, r.stderr
    assert "hi from the environment" in r.stdout


def test_manifest_pod_is_filled_in_and_followed(cluster, hello_env, tmp_path):
    """A pod written without runtimeClassName, image or annotation; --env fills them in."""
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: e2e-manifest\n"
        "spec:\n  restartPolicy: Never\n  containers:\n"
        "    - name: app\n      command: [sh, -c, 'hello; echo FLOX_ENV=$FLOX_ENV']\n"
    )
    r = run_pod(tmp_path / "pod.yaml", hello_env, cluster, "--logs", "--replace", floxk=floxk)
    assert r.returncode == 0, r.stderr
    assert "hello from floxk" in r.stdout and "FLOX_ENV=/run/floxk/env" in r.stdout
    spec = json.loads(
        subprocess.run(
            ["kubectl", "--context", cluster, "get", "pod", "e2e-manifest", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert spec["spec"]["runtimeClassName"] == "flox"
    assert spec["spec"]["containers"][0]["image"] == "flox/empty:1.0.0"
    assert spec["metadata"]["annotations"]["flox.dev/environment"] == hello_env


def test_unknown_environment_shows_the_runtime_message(cluster, hello_env):
    r = run_pod("e2e-missing", "e2e/no-such-env", cluster, "--replace", "--timeout", "180",
                command=["hello"], floxk=floxk)  # fmt: skip
    assert r.returncode == 1
    assert "events:" in r.stderr and "no-such-env" in r.stderr


def test_status_and_doctor_see_the_runtime(cluster):
    r = floxk("status", "--name", NAME, "-o", "json")
    assert r.returncode == 0, r.stderr
    [entry] = [c for c in json.loads(r.stdout) if c["provider"] == "kind"]
    assert entry["runtime_class"] is True and entry["nodes"]
    for node in entry["nodes"]:
        assert node["flox_runtime"] and node["runc_answers"] and not node["problems"]
        assert node["shim_version"].startswith("containerd-shim-flox-v2 ")
    r = floxk("doctor", "--context", cluster, "-o", "json")
    assert r.returncode == 0, r.stdout + r.stderr
