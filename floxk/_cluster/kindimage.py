"""The kind base image floxk's node layer is built FROM: upstream's, pulled, or built offline.

Two names that are never confused:
- `kindest/node:<version>` is upstream kind's image (the repository is configurable for a
  mirror: $FLOXK_KIND_BASE_REPO). floxk never tags anything under it.
- `floxk.local/kind-node:<version>` is floxk's offline build (clusters/kind/, `task
  kind:image`, docs/kind-offline.md): the same kind of image, made from the Go module proxy
  and Debian's archive where no registry is reachable. It carries the label
  `dev.floxk.kind.inputs`; an image with that label under the upstream name (what floxk
  before this split tagged) counts as the offline build, never as upstream's.
floxk's own layer on top is `floxk.local/node:...` (nodeimage.py, label `dev.floxk.node`);
it is refused as a base.

How `floxk up` picks (`decide`, data only, no side effects; `obtain` carries it out):
`--base-source auto` (default, $FLOXK_BASE_SOURCE): upstream's image when present locally,
else floxk's offline build when present locally (a local image is always preferred, so a
second `up` neither waits on the network nor changes the spec), else a pull of upstream's
(the registry is asked first, with a short timeout), else the offline build. `upstream`:
local or pulled, never built. `offline`: the offline build only, never a pull.
`--base-image IMG`: that image, pulled when absent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from floxk._proc import call
from shim.core.errors import ConfigError, FloxkError, NotFoundError

UPSTREAM_REPO = "kindest/node"
OFFLINE_REPO = "floxk.local/kind-node"
OFFLINE_LABEL = "dev.floxk.kind.inputs"  # set by clusters/kind/build-node.sh
NODE_LABEL = "dev.floxk.node"  # floxk's node layer (nodeimage.py)
REPO_ENV = "FLOXK_KIND_BASE_REPO"
SOURCE_ENV = "FLOXK_BASE_SOURCE"
PROBE_TIMEOUT_ENV = "FLOXK_PULL_PROBE_TIMEOUT"
SOURCES = ("auto", "upstream", "offline")
PROBE_TIMEOUT = 15.0  # seconds to learn whether the registry serves the image at all
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


def upstream_tag(version: str) -> str:
    """Upstream kind's node image for a Kubernetes version ($FLOXK_KIND_BASE_REPO: a mirror)."""
    return f"{os.environ.get(REPO_ENV) or UPSTREAM_REPO}:{version}"


def offline_tag(version: str) -> str:
    """floxk's offline build of a kind node image (`task kind:image`)."""
    return f"{OFFLINE_REPO}:{version}"


def buildable_lines() -> list[str]:
    """The lines this checkout's clusters/kind can build offline ([] without the recipe)."""
    return k8s_lines() if (kind_dir() / "build-image.sh").is_file() else []


def source_setting(flag: str | None) -> str:
    """--base-source, else $FLOXK_BASE_SOURCE, else auto."""
    value = flag or os.environ.get(SOURCE_ENV) or "auto"
    if value not in SOURCES:
        origin = "--base-source" if flag else f"${SOURCE_ENV}"
        raise ConfigError(f"{origin} is {value!r}", hint=f"use one of: {', '.join(SOURCES)}")
    return value


# --- looking (read only) -------------------------------------------------------------


@dataclass(frozen=True)
class Local:
    """An image in the local Engine: its id and what floxk's labels say it is."""

    ref: str
    id: str
    offline_build: bool  # floxk's offline kind build (label dev.floxk.kind.inputs)
    floxk_node: bool  # floxk's node layer (label dev.floxk.node)


def look(client, ref: str) -> Local | None:
    import docker.errors

    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    return local_of(ref, image)


def local_of(ref: str, image) -> Local:
    """A docker SDK Image as a Local."""
    labels = image.labels or {}
    return Local(ref, image.id, bool(labels.get(OFFLINE_LABEL)), labels.get(NODE_LABEL) == "true")


def probe_timeout() -> float:
    try:
        return float(os.environ.get(PROBE_TIMEOUT_ENV) or PROBE_TIMEOUT)
    except ValueError as e:
        raise ConfigError(f"${PROBE_TIMEOUT_ENV} is not a number of seconds") from e


def probe(client, ref: str, *, timeout: float | None = None) -> str | None:
    """None when the image's registry serves ref (the Engine asks it for the manifest, with
    a short timeout); else why not, in one line."""
    timeout = probe_timeout() if timeout is None else timeout
    api = client.api
    saved, api.timeout = api.timeout, timeout  # the Engine waits on the registry for us
    try:
        api.inspect_distribution(ref)
        return None
    except Exception as e:  # unreachable, unknown name, refused, timeout: all "not pullable"
        text = getattr(e, "explanation", None) or str(e) or type(e).__name__
        if "timed out" in str(e).lower():
            text = f"no answer from its registry in {timeout:g} s"
        return str(text).strip().splitlines()[0]
    finally:
        api.timeout = saved


# --- deciding (data) -----------------------------------------------------------------


@dataclass(frozen=True)
class BaseChoice:
    """What `floxk up` builds FROM and how it gets there.

    action: "use" (in the local Engine), "pull" (the registry serves it), "tag" (floxk's
    offline build found under the upstream name: tag it under the offline name, then use),
    "build" (the offline build, clusters/kind). source: "upstream", "offline" or "given"
    (--base-image). reason: one line for the progress output and `-o json`.
    """

    action: str
    image: str
    source: str
    reason: str
    tag_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """What `floxk up -o json` shows as "base" (tag_from is how, not what)."""
        return {k: v for k, v in asdict(self).items() if k != "tag_from"}


def decide(
    client,
    version: str,
    *,
    source: str = "auto",
    given: str | None = None,
    buildable: list[str] | None = None,
) -> BaseChoice:
    """Where the base comes from; looks at the local Engine and asks the registry, changes
    nothing. Raises NotFoundError (with what was tried) when no way is left."""
    if source not in SOURCES:
        raise ConfigError(
            f"unknown base source {source!r}", hint=f"use one of: {', '.join(SOURCES)}"
        )
    if given:
        return _decide_given(client, given, source)
    upstream, offline = upstream_tag(version), offline_tag(version)
    lines = buildable_lines() if buildable is None else buildable
    up_local = look(client, upstream)
    # An offline build under the upstream name (older floxk tagged it so) is the offline build.
    legacy = up_local if up_local is not None and up_local.offline_build else None
    if legacy is not None:
        up_local = None
    if source in ("auto", "upstream") and up_local is not None:
        return BaseChoice("use", upstream, "upstream", f"{upstream} is in the local Docker Engine")
    if source in ("auto", "offline"):
        if look(client, offline) is not None:
            return BaseChoice(
                "use",
                offline,
                "offline",
                f"{offline} (floxk's offline build) is in the local Docker Engine",
            )
        if legacy is not None:
            return BaseChoice(
                "tag",
                offline,
                "offline",
                f"{upstream} in the local Engine is floxk's offline build (label {OFFLINE_LABEL}), "
                f"not upstream's: using it as {offline}",
                tag_from=upstream,
            )
    why_not_pull = ""
    if source in ("auto", "upstream"):
        why_not_pull = probe(client, upstream) or ""
        if not why_not_pull:
            return BaseChoice(
                "pull",
                upstream,
                "upstream",
                f"{upstream} is not in the local Engine; its registry has it",
            )
        if source == "upstream":
            raise NotFoundError(
                f"{upstream} is not in the local Docker Engine and cannot be pulled: {why_not_pull}",
                hint="--base-source offline builds floxk's own kind node image instead "
                "(docs/kind-offline.md)",
            )
    if version in lines:
        why = (
            f"{offline} is not in the local Engine (--base-source offline)"
            if source == "offline"
            else f"{upstream} is not in the local Engine; pulling failed: {why_not_pull}"
        )
        return BaseChoice(
            "build",
            offline,
            "offline",
            f"{why}: building it offline (clusters/kind; cold: 15-25 min)",
        )
    tried = f"{upstream} cannot be pulled ({why_not_pull}); " if why_not_pull else ""
    raise NotFoundError(
        f"no kind node image for Kubernetes {version}: {tried}this checkout cannot build "
        f"{version} offline",
        hint=(
            f"the lines it builds: {', '.join(lines)} (--k8s-version); or name a kind node image "
            "with --base-image"
            if lines
            else "name a kind node image with --base-image"
        ),
    )


def _decide_given(client, given: str, source: str) -> BaseChoice:
    if source == "offline":
        raise ConfigError(
            "--base-image and --base-source offline both say where the base comes from",
            hint="drop one of them",
        )
    local = look(client, given)
    if local is not None:
        refuse_floxk_node(local)
        kind = " (floxk's offline build)" if local.offline_build else ""
        return BaseChoice("use", given, "given", f"{given}{kind} is in the local Docker Engine")
    why = probe(client, given)
    if why is None:
        return BaseChoice(
            "pull", given, "given", f"{given} is not in the local Engine; its registry has it"
        )
    raise NotFoundError(
        f"base image {given} is not in the local Docker Engine and cannot be pulled: {why}",
        hint="name a local image, or leave --base-image out: floxk then uses kindest/node or "
        "builds its own offline (`task kind:image`)",
    )


def refuse_floxk_node(local: Local) -> None:
    if local.floxk_node:
        raise ConfigError(
            f"{local.ref} is a floxk node image (floxk's layer is already on it)",
            hint="name the kind node image it was built FROM (its label dev.floxk.node.base), "
            "or leave --base-image out",
        )


# --- doing ---------------------------------------------------------------------------


def obtain(client, choice: BaseChoice, version: str, *, progress: Progress | None = None) -> str:
    """Carry out a BaseChoice; returns the image to build FROM, now in the local Engine."""
    say = progress or (lambda _m: None)
    say(f"kind base: {choice.reason}")
    if choice.action == "tag" and choice.tag_from:
        client.images.get(choice.tag_from).tag(*choice.image.rsplit(":", 1))
    elif choice.action == "pull":
        pull(client, choice.image, say)
    elif choice.action == "build":
        build_offline(version, say)
    local = look(client, choice.image)
    if local is None:
        raise NotFoundError(
            f"{choice.image} is still not in the local Docker Engine after {choice.action}"
        )
    if choice.source == "upstream" and local.offline_build:
        raise FloxkError(
            f"{choice.image} carries floxk's offline-build label: it is not upstream's"
        )
    refuse_floxk_node(local)
    return choice.image


def pull(client, ref: str, say: Progress) -> None:
    """docker pull, with a line per finished layer."""
    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    say(f"pulling {ref}")
    done = 0
    try:
        for event in client.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise FloxkError(f"pulling {ref} failed: {event['error']}")
            if event.get("status") == "Pull complete":
                done += 1
                say(f"pulling {ref}: {done} layer(s) done")
    except FloxkError:
        raise
    except Exception as e:
        raise FloxkError(
            f"pulling {ref} failed: {e}",
            hint="--base-source offline builds floxk's own kind node image instead",
        ) from e


def build_offline(version: str, say: Progress) -> str:
    """clusters/kind/build-image.sh for one line: floxk.local/kind-node:<version>."""
    script = kind_dir() / "build-image.sh"
    env = {k: v for k, v in os.environ.items() if k != "FLOXK_KIND_IMAGE_REPO"}
    build = ["bash", str(script)]
    proc = call(build, say=say, check=False, env={**env, "FLOXK_K8S_VERSION": version})
    if proc.returncode != 0:
        raise FloxkError(
            f"building {offline_tag(version)} failed (exit {proc.returncode}):\n"
            + "\n".join(proc.stdout.splitlines()[-15:]),
            hint=f"the same build by hand: FLOXK_K8S_VERSION={version} task kind:image",
        )
    return offline_tag(version)


def ensure_base_image(
    client,
    version: str,
    *,
    source: str = "auto",
    given: str | None = None,
    progress: Progress | None = None,
) -> tuple[str, BaseChoice]:
    """decide + obtain: the image to build floxk's layer FROM, and how it was had."""
    choice = decide(client, version, source=source, given=given)
    return obtain(client, choice, version, progress=progress), choice
