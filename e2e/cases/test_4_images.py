"""Environments on top of real images: Flox runs environments "in place of or on top of"
images. A flox container whose image has its own files and PATH gets the environment
first on PATH and keeps everything the image brought."""

from __future__ import annotations

import pytest

from e2e import kit
from shim.core.errors import FloxkError

ENV_ROOT = "/run/floxk/env"
APP_REPO = "floxk.local/e2e-app"
# The image's own programs: a `hello` that the environment's `hello` must shadow, and a
# tool only the image has, both on the image's PATH (/opt/app/bin first, then /bin).
IMAGE_FILES = {
    "/opt/app/bin/hello": ("#!/bin/sh\necho 'hello from the image'\n", 0o755),
    "/opt/app/bin/app-tool": ("#!/bin/sh\necho 'app-tool from the image'\n", 0o755),
    "/etc/app-release": ("app 1.0\n", 0o644),
}
IMAGE_PATH = "/opt/app/bin:/bin"


@pytest.fixture(scope="session")
def app_image(cluster) -> str:
    """A plain image with files and a PATH of its own, loaded into the nodes."""
    try:
        tag = kit.import_image(APP_REPO, applets=("sh", "cat"), files=IMAGE_FILES, path=IMAGE_PATH)
        cluster.manager.load_image(tag)
    except FloxkError as e:
        pytest.skip(f"needs a local image in the nodes: {e.message}")
    return tag


def test_environment_on_top_of_a_real_image(cluster, basic_env, app_image):
    """The environment comes first on PATH; the image's files and PATH entries stay."""
    script = (
        'echo "PATH=$PATH"; echo "FLOX_ENV=$FLOX_ENV"; hello; app-tool; '
        'echo "release: $(cat /etc/app-release)"'
    )
    container = kit.image_container("main", app_image, ["/bin/sh", "-c", script])
    o = kit.run_pod(cluster, kit.flox_pod("e2e-on-image", basic_env.ref, containers=[container]))
    assert o.state.phase == "Succeeded", o.why()
    seen = kit.env_of(o.log)
    path = seen.get("PATH", "").split(":")
    assert path[:1] == [f"{ENV_ROOT}/bin"], f"the environment is not first on PATH: {o.log}"
    assert "/opt/app/bin" in path and "/bin" in path, f"the image's PATH was dropped: {o.log}"
    assert path.index("/opt/app/bin") < path.index("/bin"), f"image PATH order lost: {o.log}"
    assert seen.get("FLOX_ENV") == ENV_ROOT, o.why()
    lines = o.log.splitlines()
    assert "hello from floxk" in lines, f"`hello` did not come from the environment: {o.log}"
    assert "hello from the image" not in lines, f"the image shadowed the environment: {o.log}"
    assert "app-tool from the image" in lines, f"the image's own program is gone: {o.log}"
    assert "release: app 1.0" in lines, f"the image's files are gone: {o.log}"
