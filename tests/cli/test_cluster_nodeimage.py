"""The node image recipe built by the real Docker Engine, FROM a local stand-in for the kind
base image: a Debian bookworm tree (mmdebstrap minbase + runc) imported into Docker, since no
registry is reachable. Skipped with a reason where Docker or mmdebstrap is missing."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from floxk._cluster import debs, nodeimage

STANDIN = "floxk.local/test-kind-standin:bookworm"


@pytest.fixture(scope="module")
def docker_client():
    try:
        return nodeimage.docker_client()
    except Exception as e:
        pytest.skip(f"no Docker Engine: {str(e).splitlines()[0]}")


@pytest.fixture(scope="module")
def standin_base(docker_client) -> str:
    """Debian bookworm with runc, like a kind node image lacking python3 and Nix."""
    if nodeimage._has_image(docker_client, STANDIN):
        return STANDIN
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is needed to build the Debian stand-in base image")
    tree = subprocess.Popen(
        [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=minbase",
            "--include=runc",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "bookworm",
            "-",
            debs.host_mirror(),
        ],
        stdout=subprocess.PIPE,
    )
    subprocess.run(
        ["docker", "import", "-", STANDIN], stdin=tree.stdout, check=True, capture_output=True
    )
    assert tree.wait() == 0
    return STANDIN


def _run(client, image: str, script: str) -> str:
    out = client.containers.run(image, ["-c", script], entrypoint="sh", remove=True)
    return out.decode()


def test_node_image_builds_from_a_debian_standin_and_is_reused(docker_client, standin_base):
    first = nodeimage.build_node_image(standin_base, client=docker_client)
    labels = docker_client.images.get(first.tag).labels
    assert labels[nodeimage.INPUTS_LABEL] == first.inputs
    assert labels[nodeimage.SHIM_LABEL] == first.shim_version
    assert first.tag.startswith("floxk.local/node:bookworm-")
    again = nodeimage.build_node_image(standin_base, client=docker_client)
    assert (again.tag, again.built) == (first.tag, False)

    out = _run(
        docker_client,
        first.tag,
        f"""
        set -e
        python3 -c 'import sys; assert sys.version_info >= (3, 11); print("python ok")'
        nix-store --version
        {nodeimage.RUNC_PATH} --version | head -1
        grep '^exec ' {nodeimage.RUNC_PATH}
        {nodeimage.SHIM_PATH} --floxk-version
        python3 -I -S -c "import sys; sys.path.insert(0, '{nodeimage.LIB_DIR}/floxk-runc'); \
from shim.core.node import load_node_config; print('hubs', load_node_config().hubs)"
        grep -c nix-command /etc/nix/nix.conf
    """,
    )
    assert "python ok" in out
    assert "nix-store (Nix)" in out
    assert "runc version" in out  # through the front to the real runc
    assert "exec /usr/sbin/runc" in out  # the front names the node's own runc
    assert f"containerd-shim-flox-v2 {first.shim_version}" in out
    assert "hubs ['file:///floxk/hub']" in out


def test_missing_base_image_says_how_to_get_one(docker_client):
    from shim.core.errors import NotFoundError

    with pytest.raises(NotFoundError, match="not in the local Docker Engine") as e:
        nodeimage.build_node_image("floxk.local/no-such-base:0", client=docker_client)
    assert "task kind:image" in e.value.hint


def test_a_version_no_line_builds_names_the_lines_it_builds(docker_client):
    from floxk._cluster import kindimage
    from shim.core.errors import NotFoundError

    with pytest.raises(NotFoundError, match="cannot build v1.0.0 offline") as e:
        kindimage.ensure_base_image(docker_client, "v1.0.0")
    assert ", ".join(kindimage.k8s_lines()) in e.value.hint
