"""The CRI suite's images, built locally (no registry): OCI image-layout tars, FROM scratch.

- pause: a static `pause` (testkit/pause.c, gcc -static) as the sandbox image;
- stub:  one empty layer, no command: what a flox pod names as its image;
- plain: a static busybox with its applets, for image-based comparison pods.

Each archive is written with tarfile + json (deterministic: fixed mtimes, root owner) and
imported with `ctr -n k8s.io images import`; the archive's index names the image through the
`io.containerd.image.name` annotation.
"""

from __future__ import annotations

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


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tar.addfile(
        _tar_info("blobs/sha256/" + digest[7:], size=len(data), mode=0o644), io.BytesIO(data)
    )
    return digest, len(data)


def write_oci_archive(
    dest: Path, ref: str, layers: list[bytes], *, entrypoint: list[str] | None = None
) -> Image:
    """Write an OCI image-layout tar holding one linux/amd64 image named `ref`."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers],
        },
        "history": [{"created_by": "floxk testkit/images.py"} for _ in layers],
    }
    if entrypoint:
        config["config"]["Entrypoint"] = entrypoint
    with tarfile.open(dest, mode="w") as tar:
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        tar.addfile(_tar_info("oci-layout", size=len(layout), mode=0o644), io.BytesIO(layout))
        layer_descs = []
        for layer in layers:
            digest, size = _blob(tar, layer)
            layer_descs.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": size,
                }
            )
        config_digest, config_size = _blob(tar, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layer_descs,
        }
        manifest_digest, manifest_size = _blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
        data = json.dumps(index, sort_keys=True).encode()
        tar.addfile(_tar_info("index.json", size=len(data), mode=0o644), io.BytesIO(data))
    return Image(ref=ref, archive=dest)


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
