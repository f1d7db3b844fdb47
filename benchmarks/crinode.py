"""A node for the CRI benchmarks: containerd 2.x with the flox runtime as shipped to nodes.

What a real node gets from the floxk-shim package (floxk/_shimbuild.py, shim/installer/):
the zipapps `containerd-shim-flox-v2` and `floxk-runc` in a bin dir, the sh front rendered
for that dir (pass-through to `real-runc`, slow path `python3 -I -S floxk-runc`), and a
node.toml naming a signed file:// hub, a chroot store and a state dir. containerd runs
with a node's PATH (its own line first, then the system directories), so `python3` is the
system's and no developer tool (pyenv shims, editable installs) is on any pod's path.

testkit's CRI harness (testkit/harness.py) runs the daemon; the images are testkit's
pause/stub/plain images plus, per benchmark, images holding an environment's store paths
(`store_image_layers`): the same files an image-based deployment would ship, pushed to a
real registry on localhost (testkit/registry.py) and pulled by containerd through CRI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common
from shim.core.model import current_system
from shim.core.realize import RealizedEnv, realize
from testkit import harness, images, lines
from testkit.images import Image, build_images
from testkit.oci import write_node_toml
from testkit.registry import Pushed, Registry

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


def install_node_bin(
    bin_dir: Path, runc_v2_shim: str | None = None, state_dir: Path | None = None
) -> tuple[str, str]:
    """The node package's bin dir as `floxk shim install` lays it out: zipapps, real-runc
    link, the runc front and (where the installer has one) the wrapper shim's front, which
    execs `runc_v2_shim`; `state_dir`: node.toml's (where the create server lives).
    Returns (runtime_path, BinaryName)."""
    from floxk._shimbuild import build_zipapps
    from shim.installer.layout import REAL_RUNC_LINK, SHIM_FRONT_NAME, SHIM_NAME
    from shim.installer.render import render_node_front, render_node_shim_front

    build_zipapps(bin_dir)
    real = bin_dir / REAL_RUNC_LINK
    if not real.is_symlink():
        real.symlink_to(lines.runc_under_test().path)
    front = bin_dir / "floxk-runc-front"
    where = {"state_dir": str(state_dir)} if state_dir is not None else {}
    front.write_text(render_node_front(str(bin_dir), NODE_PYTHON, **where))
    front.chmod(0o755)
    shim = bin_dir / SHIM_NAME
    if runc_v2_shim:
        shim = bin_dir / SHIM_FRONT_NAME
        shim.write_text(render_node_shim_front(str(bin_dir), NODE_PYTHON, runc_v2_shim, **where))
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
    registry: Registry | None = None

    def point_at(self, store: Path, state: Path, hub: str | None = None) -> None:
        """Rewrite node.toml: the shims read it on every call, so the next pod sees this
        store, state dir and hub (a fresh store and state: a node that never saw the env)."""
        write_node_toml(
            self.config,
            hubs=[hub or self.env["hub"]],
            trusted_public_keys=[self.env["key"]],
            state_dir=str(state),
            store_root=str(store),
        )

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
        shim, front = install_node_bin(self.work / "bin", runc_v2, self.state)
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
        if self.registry is not None:
            self.registry.stop()
        from shim import server

        server.stop(self.state)  # the create server a flox sandbox's prefetch left


def make_node(
    work: Path, manifest: str, *, name: str = "bench/env", flake: str | None = None
) -> Node:
    """Publish `manifest` (against `flake`, default the busybox catalog), write node.toml
    (hub, key, chroot store, state dir), build images, start a registry on localhost."""
    env = common.publish(work / "hub", manifest, name, flake=flake)
    state, store = work / "state", work / "store"
    node = Node(work, env, state, store, work / "node.toml", build_images(work / "images"))
    node.point_at(store, state)
    node.registry = Registry(work / "registry").start()
    return node


def app_node(work: Path, app: common.App, name: str = "bench/env") -> tuple[Node, RealizedEnv]:
    """make_node for the figures' application (its catalog under work/catalog), the
    environment realized on the node: warm for the pods, and the files of its images."""
    node = make_node(work, app.manifest(), name=name, flake=app.catalog(work / "catalog"))
    return node, node.realize()


def result(
    name: str, *, quick: bool, line: harness.Line, app: common.App, closure: list, **data: Any
) -> dict:
    """common.result of a CRI benchmark of the figures' application: the containerd line it
    drove, the application and its closure's size, then `data`."""
    return common.result(
        name,
        quick=quick,
        containerd=line.version,
        application=app.describe(),
        closure_paths=len(closure),
        **data,
    )


def store_image_layers(store: Path, env: RealizedEnv, shape: str = "single") -> list[bytes]:
    """The layers of an image holding the environment's files the way an image-based
    deployment ships them: its closure at /nix/store/... (copied from the chroot store at
    `store`) and the environment tree's bin/, lib/, share/... at the root (symlinks into
    /nix/store), so the default PATH finds the same programs a flox pod finds. `shape`:
    "single" (one layer) or "layered" (one layer per store path)."""
    return images.env_image_layers(store, env.activation["closure"], env.path, shape)


def push_env_image(
    registry: Registry, ref: str, store: Path, env: RealizedEnv, shape: str = "single"
) -> Pushed:
    """Build the environment's image (store_image_layers, gzip layers) and push it."""
    layers = store_image_layers(store, env, shape)
    return registry.push(ref, images.oci_image(layers, gzip_layers=True))


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
