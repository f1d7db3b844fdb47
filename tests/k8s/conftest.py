"""Shared by the real-cluster tests: they run only when asked and when kind can run here."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from floxk._cluster.kindimage import offline_tag
from floxk._cluster.spec import DEFAULT_K8S_VERSION
from testkit.nix import make_key_pair

# floxk's offline kind build (`task kind:image`); upstream kindest/node cannot be pulled here.
BASE_IMAGE = os.environ.get("FLOXK_E2E_BASE_IMAGE", offline_tag(DEFAULT_K8S_VERSION))
# A manifest installing hello and busybox (for sh); more [install] lines or tables may follow.
HELLO_MANIFEST = 'version = 1\n[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n'


def require_kind_base() -> None:
    """Skip (with the reason) unless FLOXK_E2E_KIND=1, Docker runs and BASE_IMAGE is built."""
    if os.environ.get("FLOXK_E2E_KIND") != "1":
        pytest.skip("real kind cluster test: run `task test:k8s` (sets FLOXK_E2E_KIND=1)")
    from floxk._cluster import nodeimage

    try:
        client = nodeimage.docker_client()
    except Exception as e:
        pytest.skip(f"no Docker Engine: {e}")
    if not nodeimage._has_image(client, BASE_IMAGE):
        pytest.skip(f"{BASE_IMAGE} is not built: run `task kind:image`")


def run_floxk(
    *args: str, env=None, stdin: str | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """`python -m floxk ARGS` as a user runs it; the call and its output go to stderr."""
    r = subprocess.run(
        [sys.executable, "-m", "floxk", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env=env,
    )
    print(f"$ floxk {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}", file=sys.stderr)
    return r


def lock_and_push(directory, manifest: str, catalog_flake, *push_args: str, floxk=run_floxk, **kw):
    """Write `manifest` to directory/manifest.toml, `floxk env lock` it on the test catalog
    and `floxk env push` it with PUSH_ARGS (through `floxk`, a runner like run_floxk, given
    `kw`); asserts both worked; the push's result."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.toml").write_text(manifest)
    r = floxk("env", "lock", str(directory), "--catalog", f"path:{catalog_flake}", **kw)
    assert r.returncode == 0, r.stderr
    r = floxk("env", "push", str(directory), *push_args, **kw)
    assert r.returncode == 0, r.stderr
    return r


def run_pod(pod: str | Path, ref: str, context: str, *flags: str, command=(), floxk=run_floxk,
            **kw) -> subprocess.CompletedProcess:  # fmt: skip
    """`floxk run pod POD --env REF --context CONTEXT FLAGS [-- COMMAND]` through `floxk` (a
    runner like run_floxk, given `kw`, e.g. its process `env=`): POD a pod's name, or a Path
    to its manifest (-f)."""
    target = ["-f", str(pod)] if isinstance(pod, Path) else [pod]
    tail = ["--", *command] if command else []
    return floxk("run", "pod", *target, "--env", ref, "--context", context, *flags, *tail, **kw)


def floxk_up_fresh(*args: str, floxk=run_floxk, timeout: float = 1800) -> dict:
    """`floxk up ARGS` on the offline base, recreating the cluster (through `floxk`, a runner
    like run_floxk); asserts it worked; its JSON result."""
    r = floxk("up", *args, "--base-image", BASE_IMAGE, "--timeout", "600", "--recreate",
              "-o", "json", timeout=timeout)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@contextlib.contextmanager
def fresh_cluster(*up_args: str, floxk=run_floxk, timeout: float = 1800):
    """Skip unless kind can run here; floxk_up_fresh(UP_ARGS); yields its JSON result; then
    `floxk down` (asserted) unless FLOXK_E2E_KEEP=1."""
    require_kind_base()
    result = floxk_up_fresh(*up_args, floxk=floxk, timeout=timeout)
    yield result
    if os.environ.get("FLOXK_E2E_KEEP") != "1":
        r = floxk("down", "--name", result["name"])
        assert r.returncode == 0, r.stderr


def run_kubectl(
    context: str,
    *args: str,
    check: bool = True,
    stdin: str | None = None,
    env=None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """`kubectl --context CONTEXT ARGS`; with `check`, a failure fails the test with its stderr."""
    r = subprocess.run(
        ["kubectl", "--context", context, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env=env,
    )
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r


class PrivateKube:
    """floxk and kubectl runners for one cluster whose KUBECONFIG is a private file (the
    cluster fixture sets `kubeconfig`): other clusters made on this machine meanwhile do not
    move the current context under the tests."""

    kubeconfig: Path

    def __init__(self, context: str, *, floxk_timeout: float, kubectl_timeout: float) -> None:
        self.context = context
        self.floxk_timeout, self.kubectl_timeout = floxk_timeout, kubectl_timeout

    def environ(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def floxk(self, *args: str, stdin: str | None = None, timeout: float | None = None, env=None):
        return run_floxk(*args, stdin=stdin, timeout=timeout or self.floxk_timeout,
                         env=env or self.environ())  # fmt: skip

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None, env=None):
        return run_kubectl(self.context, *args, check=check, stdin=stdin,
                           env=env or self.environ(), timeout=self.kubectl_timeout)  # fmt: skip


def sh(*argv: str, env=None, timeout: float = 900, check: bool = True, input=None):
    """Run a program; the call and its output's tail go to stderr; with `check`, a failure
    fails the test."""
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, input=input)
    print(
        f"$ {' '.join(argv)} -> {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}",
        file=sys.stderr,
    )
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


@contextlib.contextmanager
def hub_kind_cluster(name: str, work, key_name: str):
    """A one-node kind cluster `name` (labelled flox.dev/install=true) with an empty hub
    dir work/hub mounted read-only at the same path and a signing key pair for it; yields
    {"env" (with its KUBECONFIG), "hub", "public", "secret", "work"}; deleted afterwards
    unless FLOXK_E2E_KEEP=1."""
    require_kind_base()
    hub = work / "hub"
    hub.mkdir()
    public, secret = make_key_pair(work / "keys", key_name)
    config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [
            {
                "role": "control-plane",
                "labels": {"flox.dev/install": "true"},
                "extraMounts": [
                    {"hostPath": str(hub), "containerPath": str(hub), "readOnly": True}
                ],
            }
        ],
    }
    (work / "kind.yaml").write_text(yaml.safe_dump(config))
    kubeconfig = work / "kubeconfig"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    sh("kind", "delete", "cluster", "--name", name, check=False)  # a leftover of ours only
    sh("kind", "create", "cluster", "--name", name, "--image", BASE_IMAGE,
       "--config", str(work / "kind.yaml"), "--kubeconfig", str(kubeconfig), "--wait", "300s")  # fmt: skip
    try:
        yield {"env": env, "hub": hub, "public": public, "secret": secret, "work": work}
    finally:
        if os.environ.get("FLOXK_E2E_KEEP") != "1":
            sh("kind", "delete", "cluster", "--name", name, check=False)
