"""The CRI suite's images, built locally (no registry): OCI image-layout tars, FROM scratch.

- pause: a static `pause` (testkit/pause.c, gcc -static) as the sandbox image;
- stub:  one empty layer, no command: what a flox pod names as its image;
- plain: a static busybox with its applets, for image-based comparison pods;
- and images holding an environment's store paths (`env_image_layers`), single-layer or one
  layer per store path, for the benchmarks' image baselines.

Each image is written with tarfile + json (deterministic: fixed mtimes, root owner), either as
an OCI image-layout archive for `ctr -n k8s.io images import` (the archive's index names the
image through the `io.containerd.image.name` annotation) or pushed to a registry
(testkit/registry.py) for containerd to pull.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from shim.core.proc import run

PAUSE_IMAGE = "floxk.test/pause:1.0"
STUB_IMAGE = "floxk.test/stub:1.0"
PLAIN_IMAGE = "floxk.test/plain:1.0"

PAUSE_SOURCE = Path(__file__).with_name("pause.c")
BUSYBOX = "/bin/busybox"


@dataclass(frozen=True)
class Image:
    ref: str  # the name CRI sees, e.g. "floxk.test/plain:1.0"
    archive: Path  # OCI image-layout tar for `ctr images import`


def _tar_info(name: str, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _layer(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """An uncompressed layer tar: `files` path -> content (mode 0755), symlinks path -> target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted(
            {str(Path(p).parent) for p in [*files, *(symlinks or {})]} - {"."},
            key=lambda d: d.count("/"),
        )
        for d in dirs:
            tar.addfile(_tar_info(d, type=tarfile.DIRTYPE, mode=0o755))
        for path, content in sorted(files.items()):
            tar.addfile(_tar_info(path, size=len(content), mode=0o755), io.BytesIO(content))
        for path, target in sorted((symlinks or {}).items()):
            tar.addfile(_tar_info(path, type=tarfile.SYMTYPE, linkname=target, mode=0o777))
    return buf.getvalue()


@dataclass(frozen=True)
class OciImage:
    """One linux/amd64 image as its blobs: what an archive holds and what a registry serves."""

    manifest: bytes
    config: bytes
    layers: list[tuple[str, bytes]]  # (digest, blob) as stored: gzip-compressed or plain

    @property
    def digest(self) -> str:
        return _digest(self.manifest)

    def blobs(self) -> list[tuple[str, bytes]]:
        return [*self.layers, (_digest(self.config), self.config)]

    @property
    def size(self) -> int:
        """Bytes a pull of this image fetches: the manifest, the config and every layer."""
        return len(self.manifest) + len(self.config) + sum(len(b) for _, b in self.layers)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gzip_layer(layer: bytes) -> bytes:
    """A layer as registries serve it (gzip at the default level of docker and buildkit)."""
    return gzip.compress(layer, compresslevel=6, mtime=0)


def oci_image(
    layers: list[bytes],
    *,
    entrypoint: list[str] | None = None,
    gzip_layers: bool = False,
    compressed: dict[bytes, bytes] | None = None,
) -> OciImage:
    """The manifest, config and layer blobs of an image of `layers` (uncompressed tars).
    gzip_layers: store them compressed, as a registry pull leaves them in containerd's
    content store; `compressed`: already compressed layers to reuse (layer -> gzip bytes)."""
    config: dict = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer) for layer in layers]},
        "history": [{"created_by": "floxk testkit/images.py"} for _ in layers],
    }
    if entrypoint:
        config["config"]["Entrypoint"] = entrypoint
    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else "")
    stored = []
    for layer in layers:
        if gzip_layers:
            blob = (compressed or {}).get(layer) or gzip_layer(layer)
            if compressed is not None:
                compressed[layer] = blob
        else:
            blob = layer
        stored.append((_digest(blob), blob))
    config_blob = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(config_blob),
            "size": len(config_blob),
        },
        "layers": [{"mediaType": media, "digest": d, "size": len(b)} for d, b in stored],
    }
    return OciImage(json.dumps(manifest, sort_keys=True).encode(), config_blob, stored)


def write_oci_archive(
    dest: Path,
    ref: str,
    layers: list[bytes],
    *,
    entrypoint: list[str] | None = None,
    gzip_layers: bool = False,
) -> Image:
    """Write an OCI image-layout tar holding one linux/amd64 image named `ref`."""
    image = oci_image(layers, entrypoint=entrypoint, gzip_layers=gzip_layers)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    with tarfile.open(dest, mode="w") as tar:
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        tar.addfile(_tar_info("oci-layout", size=len(layout), mode=0o644), io.BytesIO(layout))
        seen = set()
        for digest, blob in [*image.blobs(), (image.digest, image.manifest)]:
            if digest in seen:
                continue
            seen.add(digest)
            info = _tar_info("blobs/sha256/" + digest[7:], size=len(blob), mode=0o644)
            tar.addfile(info, io.BytesIO(blob))
        data = json.dumps(index, sort_keys=True).encode()
        tar.addfile(_tar_info("index.json", size=len(data), mode=0o644), io.BytesIO(data))
    return Image(ref=ref, archive=dest)


# --- layers holding an environment's files (what an image-based deployment ships) ----------


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def store_layer(store: Path, paths: list[str], *, tree: Path | None = None) -> bytes:
    """A layer tar: the store `paths` (/nix/store/...) copied from the chroot store at
    `store`, and, when `tree` is given, that environment tree's entries at / (bin/, lib/...:
    symlinks into /nix/store; activation.json left out), so the default PATH finds the same
    programs a flox pod finds."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("nix", "nix/store"):
            tar.add(store / d, arcname=d, recursive=False, filter=_normalize)
        for path in sorted(paths):
            tar.add(store / path.lstrip("/"), arcname=path.lstrip("/"), filter=_normalize)
        if tree is not None:
            for entry in sorted(os.listdir(tree)):
                if entry != "activation.json":
                    tar.add(tree / entry, arcname=entry, filter=_normalize)
    return buf.getvalue()


def tree_layer(tree: Path) -> bytes:
    """The environment tree at / alone (symlinks into /nix/store)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(tree)):
            if entry != "activation.json":
                tar.add(tree / entry, arcname=entry, filter=_normalize)
    return buf.getvalue()


def file_layer(files: dict[str, bytes]) -> bytes:
    """A layer tar of plain files (mode 0644)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = _normalize(tarfile.TarInfo(name))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def dependency_order(store: Path, paths: list[str]) -> list[str]:
    """`paths` with dependencies before what depends on them and, among the paths ready, the
    most depended-on first (buildLayeredImage's popularity order), so what images share (a
    runtime) comes before what one app adds: images sharing a runtime then share the lower
    layers' chain ids (unpacked snapshots) too, whatever the store hashes are."""
    import heapq

    from shim.core.nix import path_infos

    wanted = set(paths)
    infos = path_infos(sorted(wanted), store_root=store)
    refs = {p: set(infos[p]["references"]) & wanted - {p} for p in wanted}
    closures: dict[str, set[str]] = {}

    def closure(p: str) -> set[str]:
        if p not in closures:
            closures[p] = {p}.union(*(closure(r) for r in refs[p]))
        return closures[p]

    popularity = {p: sum(p in closure(q) for q in wanted) for p in wanted}
    waiting = {p: set(refs[p]) for p in wanted}
    referrers: dict[str, set[str]] = {p: set() for p in wanted}
    for p, rs in refs.items():
        for r in rs:
            referrers[r].add(p)

    def key(p: str) -> tuple:
        return (-popularity[p], p.partition("-")[2], p)

    ready = [key(p) for p, rs in waiting.items() if not rs]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        p = heapq.heappop(ready)[2]
        order.append(p)
        for q in referrers[p]:
            waiting[q].discard(p)
            if not waiting[q]:
                heapq.heappush(ready, key(q))
    return order


def env_image_layers(store: Path, closure: list[str], tree: Path, shape: str) -> list[bytes]:
    """The layers of an image holding an environment, in one of the two shapes image builds
    take: "single" (one layer: a Dockerfile COPY of closure and tree) or "layered" (one
    layer per store path, then the tree: nix2container / buildLayeredImage style, so
    images sharing store paths share those layers)."""
    if shape == "single":
        return [store_layer(store, closure, tree=tree)]
    if shape == "layered":
        ordered = dependency_order(store, closure)
        return [store_layer(store, [p]) for p in ordered] + [tree_layer(tree)]
    raise ValueError(f"image shape {shape!r}: single or layered")


def build_pause_binary(workdir: Path) -> Path:
    """Compile testkit/pause.c statically (gcc + libc6-dev: scripts/install-containerd.sh)."""
    out = workdir / "pause"
    run(
        ["gcc", "-static", "-Os", "-s", "-Wall", "-o", str(out), str(PAUSE_SOURCE)],
        hint="gcc and libc6-dev are installed by scripts/install-containerd.sh",
    )
    return out


def busybox_applets() -> list[str]:
    return run([BUSYBOX, "--list"]).split()


def build_images(workdir: Path) -> dict[str, Image]:
    """Build the pause, stub and plain images under workdir; keys "pause", "stub", "plain"."""
    workdir.mkdir(parents=True, exist_ok=True)
    if shutil.which("busybox") is None and not os.path.exists(BUSYBOX):
        raise FileNotFoundError(
            f"{BUSYBOX} missing: scripts/install-system.sh installs busybox-static"
        )
    pause = build_pause_binary(workdir).read_bytes()
    busybox = Path(BUSYBOX).read_bytes()
    plain_links = {f"bin/{a}": "busybox" for a in busybox_applets() if a != "busybox"}
    return {
        "pause": write_oci_archive(
            workdir / "pause.tar", PAUSE_IMAGE, [_layer({"pause": pause})], entrypoint=["/pause"]
        ),
        "stub": write_oci_archive(workdir / "stub.tar", STUB_IMAGE, [_layer({})]),
        "plain": write_oci_archive(
            workdir / "plain.tar",
            PLAIN_IMAGE,
            [_layer({"bin/busybox": busybox}, plain_links)],
        ),
    }
