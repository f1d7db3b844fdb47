"""`floxk up` on a kind base that is already in the local Engine: only floxk's layer is built.

Upstream's kindest/node cannot be pulled here, so the "upstream" base is a stand-in: the
offline build (`task kind:image`) re-tagged under a private repository named by
$FLOXK_KIND_BASE_REPO (how a mirror is set), with floxk's offline-build label blanked so it
reads as a foreign image. `floxk up` with no --base-image must take it as present, say so,
build floxk's layer FROM it (python3, Nix, the shim), and a flox pod must run from that
cluster. Marker k8s (`task test:k8s`); its own cluster name, XDG data dir and kubeconfig.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from floxk._cluster import kindimage, nodeimage
from floxk._cluster.spec import DEFAULT_K8S_VERSION
from tests.k8s.conftest import BASE_IMAGE, require_kind_base, run_floxk

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = "floxk-kindest"
CONTEXT = f"kind-{NAME}"
STANDIN_REPO = "floxk-test.local/kindest/node"
STANDIN = f"{STANDIN_REPO}:{DEFAULT_K8S_VERSION}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("kind-base")
    return {
        **os.environ,
        "XDG_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "kubeconfig"),
        kindimage.REPO_ENV: STANDIN_REPO,
        kindimage.SOURCE_ENV: "auto",
    }


def floxk(env, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return run_floxk(*args, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def standin():
    """The offline build as a foreign "upstream" image: same content, no floxk label."""
    require_kind_base()
    client = nodeimage.docker_client()
    out = subprocess.run(
        ["docker", "build", "-q", "-t", STANDIN, "-"],
        input=f'FROM {BASE_IMAGE}\nLABEL {kindimage.OFFLINE_LABEL}=""\n',
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert out.returncode == 0, out.stderr
    local = kindimage.look(client, STANDIN)
    assert local is not None and not local.offline_build and not local.floxk_node
    yield STANDIN
    client.images.remove(STANDIN, force=True)


@pytest.fixture(scope="module")
def cluster(standin, env):
    r = floxk(env, "up", "--name", NAME, "--timeout", "600", "--recreate", "-o", "json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    yield result
    if os.environ.get("FLOXK_E2E_KEEP") != "1":
        assert floxk(env, "down", "--name", NAME).returncode == 0
        # The node image made FROM the stand-in is this test's own (its base goes next).
        nodeimage.docker_client().images.remove(result["node_image"], force=True)


def test_up_builds_only_floxks_layer_on_the_present_base(cluster, standin):
    assert cluster["created"] is True
    assert cluster["base"]["action"] == "use" and cluster["base"]["source"] == "upstream"
    assert cluster["base"]["image"] == standin
    client = nodeimage.docker_client()
    node = client.images.get(cluster["node_image"])
    assert node.labels[nodeimage.BASE_LABEL] == standin
    assert node.labels[kindimage.NODE_LABEL] == "true"
    base = client.images.get(standin)
    # floxk's layer sits on the base's layers, which are reused as they are.
    assert (
        node.attrs["RootFS"]["Layers"][: len(base.attrs["RootFS"]["Layers"])]
        == (base.attrs["RootFS"]["Layers"])
    )
    assert node.attrs["RootFS"]["Layers"] != base.attrs["RootFS"]["Layers"]


def test_a_flox_pod_runs_on_it(cluster, env, catalog_flake, tmp_path):
    (tmp_path / "manifest.toml").write_text('version = 1\n[install]\nhello.pkg-path = "hello"\n')
    assert (
        floxk(env, "env", "lock", str(tmp_path), "--catalog", f"path:{catalog_flake}").returncode
        == 0
    )
    r = floxk(env, "env", "push", str(tmp_path), "--name", "kindest/hello")
    assert r.returncode == 0, r.stderr
    r = floxk(env, "run", "pod", "kindest-hello", "--env", "kindest/hello", "--context", CONTEXT,
              "--", "hello")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "hello from floxk" in r.stdout


def test_second_up_says_why_and_changes_nothing(cluster, env):
    r = floxk(env, "up", "--name", NAME, "-o", "json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert (again["created"], again["node_image_built"]) == (False, False)
    assert again["spec_digest"] == cluster["spec_digest"]
    assert f"kind base: {STANDIN} is in the local Docker Engine" in r.stderr
