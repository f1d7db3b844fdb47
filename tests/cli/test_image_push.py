"""`floxk shim image build --push`'s push, against a real registry on localhost.

The CNCF distribution registry (built by clusters/helm/build-tools.sh; the `registry`
fixture in conftest.py) serves a temp dir on 127.0.0.1; the local Docker Engine pushes a small image to it (localhost needs no TLS);
the registry's own API then serves the manifest under the digest push_image reported.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from floxk import _deploy
from shim.core.errors import ConfigError
from testkit.net import free_port


def test_push_lands_in_the_registry_under_its_digest(docker_client, registry):
    from floxk._cluster import up

    local = up.ensure_stub_image(docker_client)  # small, built here (docker import)
    ref = f"{registry}/floxk/push-test:1"
    pushed = _deploy.push_image(local, ref, client=docker_client)
    try:
        assert pushed.ref == ref and pushed.digest.startswith("sha256:")
        host = registry.replace("localhost", "127.0.0.1")
        req = urllib.request.Request(
            f"http://{host}/v2/floxk/push-test/manifests/1",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                     "application/vnd.oci.image.manifest.v1+json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Docker-Content-Digest"] == pushed.digest
            assert json.loads(resp.read())["schemaVersion"] == 2
    finally:
        docker_client.images.remove(ref)


def test_push_refuses_a_ref_without_registry_and_says_when_it_fails(docker_client):
    from floxk._cluster import up

    local = up.ensure_stub_image(docker_client)
    with pytest.raises(ConfigError, match="names no registry"):
        _deploy.push_image(local, "installer:1", client=docker_client)
    port = free_port()  # a port nobody serves
    ref = f"localhost:{port}/floxk/push-test:1"
    try:
        with pytest.raises(ConfigError, match="pushing .* failed") as e:
            _deploy.push_image(local, ref, client=docker_client)
        assert "docker login" in e.value.hint
    finally:
        docker_client.images.remove(ref)
