"""The floxk node image: FROM a kind node image, plus python3, Nix and the floxk runtime.

Recipe (templates in clusters/node/): Debian .debs for python3 and nix-bin (fetched on the
host, see debs.py), the shim zipapps of `floxk shim build`, the floxk-runc front rendered
inside the node for the node's own runc, Nix's config and a default /etc/floxk/node.toml.
A cluster's own node.toml (its dev hub and signing key) is mounted over that default, so
one image serves every cluster.

The tag carries a digest of every input (base image id, recipe, shim sources, .debs):
a second `floxk up` with nothing changed finds the image and builds nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from floxk._cluster import debs as debian
from floxk._cluster.spec import cache_dir
from floxk._shimbuild import build_zipapps
from shim.core import containerd as ctrd
from shim.core.errors import FloxkError, MissingDependencyError, NotFoundError

# Paths inside the node.
LIB_DIR = "/usr/local/lib/floxk"
SHIM_PATH = "/usr/local/bin/containerd-shim-flox-v2"
RUNC_PATH = "/usr/local/bin/floxk-runc"
HUB_DIR = "/floxk/hub"
STATE_DIR = "/var/lib/floxk"
NODE_TOML = "/etc/floxk/node.toml"

NODE_PACKAGES = ["python3", "nix-bin"]
IMAGE_REPO = "floxk.local/node"
INPUTS_LABEL = "dev.floxk.node.inputs"
SHIM_LABEL = "dev.floxk.shim.version"
BASE_LABEL = "dev.floxk.node.base"
BASE_ID_LABEL = "dev.floxk.node.base-id"  # the base's image id: part of the inputs digest

Progress = Callable[[str], None]


def assets_dir() -> Path:
    """clusters/node/ of this checkout: the recipe's templates."""
    return Path(__file__).resolve().parents[2] / "clusters" / "node"


def _template(name: str) -> Template:
    return Template((assets_dir() / name).read_text())


# --- rendering (pure) ------------------------------------------------------------------


def render_node_toml(*, trusted_public_keys: list[str], hub_dir: str = HUB_DIR) -> str:
    keys = ", ".join(json.dumps(k) for k in trusted_public_keys)
    return _template("node.toml.in").substitute(hub_dir=hub_dir, trusted_public_keys=keys)


def render_dockerfile(base_image: str, *, with_debs: bool, labels: dict[str, str]) -> str:
    if with_debs:
        install = (
            "# python3 and Nix from Debian, downloaded on the host for the base image's release\n"
            "# against its own dpkg status: the build needs no network.\n"
            "COPY debs/ /tmp/floxk-debs/\n"
            "# apt (not dpkg -i) orders them by their pre-dependencies; nothing is downloaded.\n"
            "RUN DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\\n"
            "      -o Acquire::Languages=none /tmp/floxk-debs/*.deb >/dev/null \\\n"
            " && rm -rf /tmp/floxk-debs /var/lib/apt/lists/*"
        )
    else:
        install = "# python3 and nix-bin: already in the base image."
    return _template("Dockerfile.in").substitute(
        base_image=base_image,
        install_debs=install,
        state_dir=STATE_DIR,
        hub_dir=HUB_DIR,
        lib_dir=LIB_DIR,
        shim_path=SHIM_PATH,
        runc_path=RUNC_PATH,
        labels=" ".join(
            f"{k}={json.dumps(v)}" for k, v in sorted({"dev.floxk.node": "true", **labels}.items())
        ),
    )


def containerd_patch(
    *, config_version: int = 2, systemd_cgroup: bool = True, restrict_oom_score_adj: bool = False
) -> str:
    """TOML registering the flox runtime, for a node whose config.toml has `config_version`.

    kind merges containerdConfigPatches into /etc/containerd/config.toml and silently skips
    a patch whose `version` differs; every kind release keeps `version = 2` (containerd 2.x
    migrates it), so the table goes under the 1.x plugin id. systemd_cgroup must match the
    kubelet's cgroup driver: kind's kubelet uses systemd.
    """
    table = ctrd.flox_runtime_table(
        shim_path=SHIM_PATH, runc_path=RUNC_PATH, systemd_cgroup=systemd_cgroup
    )
    plugin: dict[str, Any] = {"containerd": {"runtimes": {ctrd.FLOX_RUNTIME: table}}}
    if restrict_oom_score_adj:
        plugin["restrict_oom_score_adj"] = True
    config = {
        "version": config_version,
        "plugins": {ctrd.CRI_RUNTIME_PLUGIN[config_version]: plugin},
    }
    return ctrd.to_toml(config)


# --- the build context -------------------------------------------------------------------


def write_shim_payload(lib_dir: Path) -> str:
    """The shim zipapps into lib_dir; returns "VERSION DIGEST" (what --floxk-version says)."""
    result = build_zipapps(lib_dir)
    return f"{result.version} {result.source_digest[:16]}"


def write_context(
    dest: Path, *, base_image: str, base_id: str, debs: list[Path]
) -> tuple[str, str]:
    """Lay the build context out in dest; returns (inputs digest, shim version)."""
    rootfs = dest / "rootfs"
    shim_version = write_shim_payload(rootfs / LIB_DIR.lstrip("/"))
    (rootfs / "etc/nix").mkdir(parents=True)
    shutil.copyfile(assets_dir() / "nix.conf", rootfs / "etc/nix/nix.conf")
    (rootfs / NODE_TOML.lstrip("/")).parent.mkdir(parents=True)
    (rootfs / NODE_TOML.lstrip("/")).write_text(render_node_toml(trusted_public_keys=[]))
    if debs:
        (dest / "debs").mkdir()
        for deb in debs:
            shutil.copyfile(deb, dest / "debs" / deb.name)
    h = hashlib.sha256()
    h.update(f"base {base_image} {base_id}\n".encode())
    h.update(render_dockerfile(base_image, with_debs=bool(debs), labels={}).encode())
    for p in sorted(dest.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(dest).as_posix()} {p.stat().st_mode & 0o111:o}\n".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    key = h.hexdigest()
    labels = {
        INPUTS_LABEL: key,
        SHIM_LABEL: shim_version,
        BASE_LABEL: base_image,
        BASE_ID_LABEL: base_id,
    }
    (dest / "Dockerfile").write_text(
        render_dockerfile(base_image, with_debs=bool(debs), labels=labels)
    )
    return key, shim_version


def image_tag(base_image: str, key: str) -> str:
    """floxk.local/node:<base tag>-<inputs digest>, e.g. floxk.local/node:v1.34.4-0123abcd4567."""
    base_tag = base_image.rsplit(":", 1)[1] if ":" in base_image.rsplit("/", 1)[-1] else "latest"
    return f"{IMAGE_REPO}:{base_tag}-{key[:12]}"


# --- docker --------------------------------------------------------------------------


def docker_client():
    """A docker SDK client for the local Engine, or a MissingDependencyError with the fix."""
    try:
        import docker
    except ImportError as e:
        raise MissingDependencyError(
            "the docker Python SDK is not installed", hint="pip install -e . (floxk depends on it)"
        ) from e
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as e:
        raise MissingDependencyError(
            f"cannot reach a Docker Engine: {e}",
            hint="start Docker (here: bash clusters/kind/dockerd.sh start) or set DOCKER_HOST",
        ) from e
    return client


def read_image_files(client, image: str, paths: list[str]) -> dict[str, str | None]:
    """Text of files inside an image (None where missing), without starting it."""
    container = client.containers.create(image, entrypoint=["/nonexistent"], command=[])
    try:
        out: dict[str, str | None] = {}
        for path in paths:
            try:
                stream, _ = container.get_archive(path)
            except Exception:
                out[path] = None
                continue
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                f = tar.extractfile(member) if member is not None else None
                out[path] = f.read().decode() if f is not None else None
        return out
    finally:
        container.remove(force=True)


@dataclass(frozen=True)
class NodeImage:
    tag: str
    base_image: str
    inputs: str
    shim_version: str
    built: bool  # False: an image with these inputs existed already


def build_node_image(
    base_image: str, *, client=None, progress: Progress | None = None, rebuild: bool = False
) -> NodeImage:
    """Build (or find) the floxk node image FROM base_image; returns its tag."""
    say = progress or (lambda _msg: None)
    client = client or docker_client()
    import docker.errors

    try:
        base = client.images.get(base_image)
    except docker.errors.ImageNotFound as e:
        raise NotFoundError(
            f"base image {base_image} is not in the local Docker Engine",
            hint="leave --base-image out (floxk then uses kindest/node, pulled when missing, or "
            "builds its own offline: `task kind:image`), or name a local image",
        ) from e
    from floxk._cluster import kindimage

    # floxk's layer goes on a kind node image, never on a floxk node image (twice layered).
    kindimage.refuse_floxk_node(kindimage.local_of(base_image, base))
    debs = _node_debs(client, base_image, base.id, say)
    with tempfile.TemporaryDirectory(prefix="floxk-node-") as tmp:
        ctx = Path(tmp)
        key, shim_version = write_context(ctx, base_image=base_image, base_id=base.id, debs=debs)
        tag = image_tag(base_image, key)
        if not rebuild and _has_image(client, tag):
            say(f"node image {tag} is up to date")
            return NodeImage(tag, base_image, key, shim_version, built=False)
        say(f"building node image {tag} FROM {base_image}")
        _docker_build(client, ctx, tag, say)
    return NodeImage(tag, base_image, key, shim_version, built=True)


def _has_image(client, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _node_debs(client, base_image: str, base_id: str, say: Progress) -> list[Path]:
    """The .debs python3 + nix-bin need on top of the base (cached per base image id)."""
    files = read_image_files(client, base_image, ["/usr/lib/os-release", "/var/lib/dpkg/status"])
    status = files["/var/lib/dpkg/status"]
    if files["/usr/lib/os-release"] is None or status is None:
        raise FloxkError(
            f"{base_image} has no /usr/lib/os-release or dpkg status",
            hint="floxk node images are built FROM Debian-based kind node images",
        )
    if set(NODE_PACKAGES) <= debian.installed_packages(status):
        return []
    codename = debian.os_release_codename(files["/usr/lib/os-release"])
    key = hashlib.sha256(f"{base_id} {codename} {' '.join(NODE_PACKAGES)}".encode()).hexdigest()
    return debian.cached(
        NODE_PACKAGES,
        codename=codename,
        dpkg_status=status,
        dest=cache_dir() / "cluster" / f"debs-{key[:16]}",
        say=say,
        what=f"downloading {', '.join(NODE_PACKAGES)} for Debian {codename} (host-side apt)",
    )


def _docker_build(client, ctx: Path, tag: str, say: Progress) -> None:
    log: list[str] = []
    for chunk in client.api.build(
        path=str(ctx), tag=tag, rm=True, forcerm=True, pull=False, decode=True
    ):
        if "stream" in chunk:
            text = chunk["stream"].rstrip()
            if text:
                log.append(text)
                if text.startswith("Step "):
                    say(text)
        if "error" in chunk:
            tail = "\n".join(log[-25:])
            raise FloxkError(
                f"building node image {tag} failed: {chunk['error'].strip()}\n{tail}",
                hint="the build log above names the failing step",
            )
