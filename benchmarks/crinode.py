"""A node for the CRI benchmarks: containerd 2.x with the flox runtime as shipped to nodes.

What a real node gets from the floxk-shim package (floxk/_shimbuild.py, shim/install.py):
the zipapps `containerd-shim-flox-v2` and `floxk-runc` in a bin dir, the sh front rendered
for that dir (pass-through to `real-runc`, slow path `python3 -I -S floxk-runc`), and a
node.toml naming a signed file:// hub, a chroot store and a state dir. containerd runs
with a node's PATH (its own line first, then the system directories), so `python3` is the
system's and no developer tool (pyenv shims, editable installs) is on any pod's path.

The CRI harness of the test suite (testkit/harness.py) runs the daemon; the images are
the suite's pause/stub/plain images plus, per benchmark, images holding an environment's
store paths (`store_image`): the same files an image-based deployment would ship.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common
from shim.core.model import current_system
from shim.core.realize import RealizedEnv, realize
from testkit import harness, lines
from testkit.images import Image, build_images, write_oci_archive
from testkit.oci import write_node_toml

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_PYTHON = "/usr/bin/python3"
LINE = os.environ.get("FLOXK_BENCH_CONTAINERD", "2.1.9")


def containerd_line(version: str = LINE) -> harness.Line:
    for line in harness.installed_lines():
        if line.version == version:
            return line
    raise SystemExit(
        f"containerd {version} is not installed: run scripts/install-containerd.sh"
        " (FLOXK_BENCH_CONTAINERD picks another line)"
    )


def install_node_bin(bin_dir: Path, runc_v2_shim: str | None = None) -> tuple[str, str]:
    """The node package's bin dir as `floxk shim install` lays it out: zipapps, real-runc
    link, the runc front and (where the installer has one) the wrapper shim's front, which
    execs `runc_v2_shim`. Returns (runtime_path, BinaryName)."""
    from floxk._shimbuild import build_zipapps
    from shim import install as node_install

    build_zipapps(bin_dir)
    real = bin_dir / node_install.REAL_RUNC_LINK
    if not real.is_symlink():
        real.symlink_to(lines.runc_under_test().path)
    front = bin_dir / "floxk-runc-front"
    front.write_text(node_install.render_node_front(str(bin_dir), NODE_PYTHON))
    front.chmod(0o755)
    shim = bin_dir / node_install.SHIM_NAME
    render_shim = getattr(node_install, "render_node_shim_front", None)
    if render_shim is not None and runc_v2_shim:
        shim = bin_dir / node_install.SHIM_FRONT_NAME
        shim.write_text(render_shim(str(bin_dir), NODE_PYTHON, runc_v2_shim))
        shim.chmod(0o755)
    return str(shim), str(front)


def install_node_bin_at(root: Path, bin_dir: Path, runc_v2_shim: str) -> tuple[str, str]:
    """install_node_bin as the checkout at `root` (e.g. an older revision, see
    podstart.tree_at) does it: its own zipapp builder, fronts and layout."""
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        " from benchmarks.crinode import install_node_bin as f;"
        " takes = 'runc_v2_shim' in f.__code__.co_varnames[: f.__code__.co_argcount];"
        " print(json.dumps(f(Path(sys.argv[2]), *sys.argv[3:]) if takes else f(Path(sys.argv[2]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), str(bin_dir), runc_v2_shim],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    shim, front = json.loads(out.splitlines()[-1])
    return shim, front


@dataclass
class Node:
    work: Path
    env: dict[str, Any]  # common.publish() of the environment
    state: Path
    store: Path
    config: Path
    images: dict[str, Image]
    daemon: harness.Containerd | None = None

    def realize(self) -> RealizedEnv:
        """Realize the environment as the node would (warms it for the pods)."""
        return realize(
            self.env["lock"],
            system=current_system(),
            substituters=[self.env["hub"]],
            trusted_keys=[self.env["key"]],
            store_root=self.store,
            state_dir=self.state,
        )

    def start(self, line: harness.Line, extra: dict[str, Path] | None = None) -> harness.CRI:
        """Start containerd with the flox runtime; `extra`: more flox-shaped runtime handlers,
        name -> a checkout (e.g. an older revision) whose own code lays out their bin dir
        (same node.toml)."""
        from shim.core import containerd as ctrd

        runc_v2 = str(line.bin_dir / "containerd-shim-runc-v2")
        shim, front = install_node_bin(self.work / "bin", runc_v2)
        runtimes = {}
        for name, root in (extra or {}).items():
            x_shim, x_front = install_node_bin_at(root, self.work / f"bin-{name}", runc_v2)
            runtimes[name] = ctrd.merge(
                ctrd.flox_runtime_table(shim_path=x_shim, runc_path=x_front),
                {"options": {"Root": str(self.work / "runc-state")}},
            )
        self.daemon = harness.Containerd(
            line=line,
            images=self.images,
            flox_shim=shim,
            flox_runc=front,
            env={
                "FLOXK_NODE_CONFIG": str(self.config),
                "PATH": f"{line.bin_dir}:{SYSTEM_PATH}",
            },
        )
        if runtimes:
            plugin = ctrd.runtime_plugin_id(line.version)
            self.daemon.extra_config = {"plugins": {plugin: {"containerd": {"runtimes": runtimes}}}}
        self.daemon.start()
        return self.daemon.cri

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


def make_node(work: Path, manifest: str, *, name: str = "bench/env") -> Node:
    """Publish `manifest`, write node.toml (hub, key, chroot store, state dir), build images."""
    env = common.publish(work / "hub", manifest, name)
    state, store = work / "state", work / "store"
    config = write_node_toml(
        work / "node.toml",
        hubs=[env["hub"]],
        trusted_public_keys=[env["key"]],
        state_dir=str(state),
        store_root=str(store),
    )
    images = build_images(work / "images")
    return Node(work, env, state, store, config, images)


def store_image(dest: Path, ref: str, store: Path, env: RealizedEnv) -> Image:
    """An image holding the environment's files the way an image-based deployment ships
    them: its closure at /nix/store/... (copied from the chroot store at `store`) and the
    environment tree's bin/, lib/, share/... at the root (symlinks into /nix/store), so the
    default PATH finds the same programs a flox pod finds."""
    return write_image(dest, ref, [env_layer(store, env)])


def env_layer(store: Path, env: RealizedEnv, *, paths: list[str] | None = None) -> bytes:
    """A layer tar: `paths` (default: the whole closure) from the chroot store, plus the
    environment tree at / when paths is None."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("nix", "nix/store"):
            tar.add(store / d, arcname=d, recursive=False, filter=_normalize)
        for path in sorted(paths if paths is not None else env.activation["closure"]):
            tar.add(store / path.lstrip("/"), arcname=path.lstrip("/"), filter=_normalize)
        if paths is None:
            for entry in sorted(os.listdir(env.path)):
                if entry != "activation.json":
                    tar.add(env.path / entry, arcname=entry, filter=_normalize)
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


def write_image(dest: Path, ref: str, layers: list[bytes], *, gzip_layers: bool = False) -> Image:
    """An OCI image-layout tar for `ctr images import`. gzip_layers: store the layers
    compressed, as a registry pull leaves them in containerd's content store."""
    if not gzip_layers:
        return write_oci_archive(dest, ref, layers)
    # testkit/images.py writes uncompressed layers only: rewrite the layer descriptors.
    import gzip
    import hashlib
    import json

    plain = write_oci_archive(dest, ref, layers)
    blobs: dict[str, bytes] = {}
    with tarfile.open(plain.archive) as tar:
        for m in tar.getmembers():
            if m.isfile():
                blobs[m.name] = tar.extractfile(m).read()
    index = json.loads(blobs["index.json"])
    mname = "blobs/sha256/" + index["manifests"][0]["digest"][7:]
    manifest = json.loads(blobs.pop(mname))
    out = {k: v for k, v in blobs.items() if k in ("oci-layout",)}
    out["blobs/sha256/" + manifest["config"]["digest"][7:]] = blobs[
        "blobs/sha256/" + manifest["config"]["digest"][7:]
    ]
    for desc in manifest["layers"]:
        data = gzip.compress(blobs["blobs/sha256/" + desc["digest"][7:]], mtime=0)
        digest = hashlib.sha256(data).hexdigest()
        out["blobs/sha256/" + digest] = data
        desc.update(
            mediaType="application/vnd.oci.image.layer.v1.tar+gzip",
            digest=f"sha256:{digest}",
            size=len(data),
        )
    mdata = json.dumps(manifest, sort_keys=True).encode()
    mdigest = hashlib.sha256(mdata).hexdigest()
    out["blobs/sha256/" + mdigest] = mdata
    index["manifests"][0].update(digest=f"sha256:{mdigest}", size=len(mdata))
    out["index.json"] = json.dumps(index, sort_keys=True).encode()
    with tarfile.open(dest, "w") as tar:
        for name, data in out.items():
            info = _normalize(tarfile.TarInfo(name))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return Image(ref=ref, archive=dest)


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def disk_usage(*roots: Path) -> int:
    """Bytes allocated on disk under `roots`, each inode counted once (hard links)."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(path: str) -> None:
        nonlocal total
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512

    for root in roots:
        add(str(root))
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                add(os.path.join(dirpath, name))
    return total
