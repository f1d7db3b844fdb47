"""The kind base image `kindest/node:<version>`: found locally, or built offline on demand.

No registry is used. The checkout's clusters/kind/ builds the image from the Go module
proxy and Debian's archive (`task kind:image`, docs/kind-offline.md) for the Kubernetes
lines its versions.env lists; the first is the default. `floxk up --k8s-version V` builds
line V the first time it is asked for (cold: 15-25 minutes on 2 cores), then reuses it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from shim.core.errors import FloxkError, NotFoundError
from shim.core.proc import stream

REPO = "kindest/node"
Progress = Callable[[str], None]


def kind_dir() -> Path:
    """clusters/kind/ of this checkout: the offline image's recipe."""
    return Path(__file__).resolve().parents[2] / "clusters" / "kind"


def k8s_lines(versions_env: Path | None = None) -> list[str]:
    """The Kubernetes versions clusters/kind can build, default first (versions.env)."""
    text = (versions_env or kind_dir() / "versions.env").read_text()
    m = re.search(r'^K8S_LINES="([^"]*)"', text, re.MULTILINE)
    if not m or not m.group(1).split():
        raise FloxkError(f"{versions_env or kind_dir() / 'versions.env'} sets no K8S_LINES")
    return m.group(1).split()


def tag(version: str) -> str:
    return f"{REPO}:{version}"


def ensure_base_image(client, version: str, *, progress: Progress | None = None) -> str:
    """kindest/node:<version> in the local Engine, built offline when missing; returns the tag."""
    import docker.errors

    say = progress or (lambda _m: None)
    image = tag(version)
    try:
        client.images.get(image)
        return image
    except docker.errors.ImageNotFound:
        pass
    script = kind_dir() / "build-image.sh"
    lines = k8s_lines() if script.is_file() else []
    if version not in lines:
        raise NotFoundError(
            f"base image {image} is not in the local Docker Engine and this checkout cannot "
            f"build Kubernetes {version}",
            hint=(
                f"the lines it builds: {', '.join(lines)} (--k8s-version); or name a local "
                "kind node image with --base-image"
                if lines
                else "name a local kind node image with --base-image"
            ),
        )
    say(
        f"{image} is not in the local Docker Engine: building it offline ({script.name}; cold: 15-25 min)"
    )
    env = {k: v for k, v in os.environ.items() if k != "FLOXK_KIND_IMAGE_REPO"}
    code, tail = stream(["bash", str(script)], say, env={**env, "FLOXK_K8S_VERSION": version})
    if code != 0:
        raise FloxkError(
            f"building {image} failed (exit {code}):\n" + "\n".join(tail[-15:]),
            hint=f"the same build by hand: FLOXK_K8S_VERSION={version} task kind:image",
        )
    return image
