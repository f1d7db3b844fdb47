"""Fixtures of the CLI tests that need the local Docker Engine or a registry, and the cluster
spec the rendering tests start from."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from floxk import _deploy
from floxk._cluster.spec import ClusterFiles, ClusterSpec
from floxk._cluster.up import build_spec
from testkit.net import free_port


def cluster_spec(files: ClusterFiles, **kw) -> ClusterSpec:
    """`build_spec` of kind cluster "dev" (2 workers, Kubernetes v1.34.4, a fixed node image,
    restrict_oom_score_adj on) with its host files in `files`; KW overrides any of them."""
    args = dict(
        provider="kind",
        name="dev",
        workers=2,
        k8s_version="v1.34.4",
        node_image="floxk.local/node:v1.34.4-abc",
        restrict_oom_score_adj=True,
    )
    return build_spec(files=files, **{**args, **kw})


def _registry_binary() -> str | None:
    built = sorted((_deploy.cache_dir() / "kind").glob("helm-tools-*/registry"))
    return str(built[-1]) if built else None


@pytest.fixture
def docker_client():
    from floxk._cluster import nodeimage

    try:
        return nodeimage.docker_client()
    except Exception as e:
        pytest.skip(f"no Docker Engine: {e}")


@pytest.fixture
def registry(tmp_path):
    binary = _registry_binary()
    if binary is None:
        pytest.skip("registry not built: bash clusters/helm/build-tools.sh")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }))  # fmt: skip
    log = open(tmp_path / "registry.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log,
                            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})  # fmt: skip
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).read()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        else:
            raise AssertionError((tmp_path / "registry.log").read_text())
        yield f"localhost:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
