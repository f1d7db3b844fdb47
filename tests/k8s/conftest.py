"""Shared by the real-cluster tests: they run only when asked and when kind can run here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from floxk._cluster.kindimage import offline_tag
from floxk._cluster.spec import DEFAULT_K8S_VERSION

# floxk's offline kind build (`task kind:image`); upstream kindest/node cannot be pulled here.
BASE_IMAGE = os.environ.get("FLOXK_E2E_BASE_IMAGE", offline_tag(DEFAULT_K8S_VERSION))


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
