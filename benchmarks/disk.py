"""Figure c, node disk: K applications sharing one runtime, flox vs the same files as images.

    python3 -m benchmarks.disk [--quick] [--levels 1,4,16] [--out DIR]

K applications on one runtime: environment i installs the test catalog's python3 (the
host's interpreter, standard library and shared libraries as ~22 store paths), busybox and
its own application pyapp<i>, so each has its own lock digest, tree and app path while the
runtime is shared. On the flox side, all K are realized into one chroot store
(shim.core.realize, as pods would); bytes = the store paths + the trees + the chroot store's Nix
database directory (a fixed ~8 MiB: Nix keeps an 8 MiB `reserved` file there; a node that
uses its host's /nix/store already pays it), reported apart as well.

The image side ships the same files per application: image i holds the closure at
/nix/store and the environment tree at /. Layers are gzip-compressed, pushed to a registry
on localhost and pulled through CRI by a containerd 2.x daemon (unpacked into overlayfs);
bytes = content store + snapshots. Two shapes, because they bound what image builds achieve:
  single   one layer per image (a typical Dockerfile COPY of the tree): nothing is shared
  layered  one layer per store path plus the tree's layer (nix2container /
           buildLayeredImage style): shared layers are stored once
Bytes are blocks allocated on disk (du), each inode counted once. Target: flox <= layered
images at every K.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, crinode  # noqa: E402
from testkit import harness, images  # noqa: E402
from testkit.images import build_images  # noqa: E402
from testkit.registry import Registry  # noqa: E402

CONTENT = "io.containerd.content.v1.content"
SNAPSHOTS = "io.containerd.snapshotter.v1.overlayfs"


def publish_all(work: Path, k: int, app: common.App) -> tuple[dict, list[str]]:
    """Lock and push K environments to one signed cache; returns (hub info, refs)."""
    from floxk._lock import lock_environment
    from floxk._push import push_environment

    catalog = app.catalog(work / "catalog")
    keys = work / "keys"
    keys.mkdir()
    subprocess.run(
        ["nix-store", "--generate-binary-cache-key", "bench-1", keys / "sk", keys / "pk"],
        check=True,
    )
    cache, refs = work / "cache", []
    for i in range(k):
        d = work / f"app{i}"
        d.mkdir()
        (d / "manifest.toml").write_text(app.manifest(i))
        lock_environment(d, catalog=catalog)
        pushed = push_environment(
            d, to=cache.as_uri(), name=f"bench/app{i}", signing_key=keys / "sk"
        )
        refs.append(pushed.ref)
    return {"hub": f"file://{cache}", "key": (keys / "pk").read_text().strip()}, refs


def realize_ref(ref: str, hub_info: dict, store: Path, state: Path):
    from shim.core import hub
    from shim.core.model import current_system
    from shim.core.realize import realize

    lock = hub.peek(ref, [hub_info["hub"]]).lock
    return realize(
        lock,
        system=current_system(),
        substituters=[hub_info["hub"]],
        trusted_keys=[hub_info["key"]],
        store_root=store,
        state_dir=state,
    )


def image_bytes(work: Path, shape: str, envs: list, store: Path, levels: list[int]) -> dict:
    """Push images 1..K to a registry and pull them into a fresh containerd through CRI,
    measuring after each level."""
    line = crinode.containerd_line()
    base = build_images(work / f"base-{shape}")
    daemon = harness.Containerd(
        line=line,
        images={"pause": base["pause"]},
        flox_shim="/nonexistent",
        flox_runc="/nonexistent",
        env={"PATH": f"{line.bin_dir}:{crinode.SYSTEM_PATH}"},
    )
    compressed: dict[bytes, bytes] = {}  # a layer shared by images is compressed once
    with Registry(work / f"registry-{shape}") as registry:
        daemon.start()
        try:
            root = daemon.root
            before = crinode.disk_usage(root / CONTENT, root / SNAPSHOTS)
            out, pulled = {}, 0
            for k in levels:
                for i in range(pulled, k):
                    env = envs[i]
                    layers = images.env_image_layers(
                        store, env.activation["closure"], env.path, shape
                    )
                    image = images.oci_image(layers, gzip_layers=True, compressed=compressed)
                    pushed = registry.push(f"bench/app{i}:{shape}", image)
                    daemon.cri.pull_image(pushed.ref)
                pulled = k
                content = crinode.disk_usage(root / CONTENT)
                snapshots = crinode.disk_usage(root / SNAPSHOTS)
                out[str(k)] = {
                    "content": content,
                    "snapshots": snapshots,
                    "bytes": content + snapshots - before,
                }
            return out
        finally:
            daemon.stop()


def run(quick: bool, levels: list[int] | None = None) -> dict:
    levels = sorted(levels or ([1, 2] if quick else [1, 4, 16]))
    k_max = levels[-1]
    with tempfile.TemporaryDirectory(prefix="floxk-bench-disk-") as tmp:
        work = Path(tmp)
        common.note(f"locking and publishing {k_max} environments")
        app = common.App.for_mode(quick)
        hub_info, refs = publish_all(work / "hub", k_max, app)
        store, state = work / "store", work / "state"
        flox, envs, done = {}, [], 0
        for k in levels:
            for ref in refs[done:k]:
                envs.append(realize_ref(ref, hub_info, store, state))
            done = k
            paths = crinode.disk_usage(store / "nix" / "store")
            nix_db = crinode.disk_usage(store / "nix" / "var")  # db + 8 MiB reserved file
            trees = crinode.disk_usage(state / "envs")
            flox[str(k)] = {
                "store_paths": paths,
                "nix_db": nix_db,
                "trees": trees,
                "bytes": paths + nix_db + trees,
                "bytes_without_nix_db": paths + trees,
            }
        images = {}
        for shape in ("single", "layered"):
            common.note(f"pushing and pulling {k_max} {shape}-layer images")
            images[shape] = image_bytes(work, shape, envs, store, levels)
        closure = envs[0].activation["closure"]
    per_k = {
        str(k): {
            "flox": flox[str(k)],
            "single": images["single"][str(k)],
            "layered": images["layered"][str(k)],
            "flox_over_single": flox[str(k)]["bytes"] / images["single"][str(k)]["bytes"],
            "flox_over_layered": flox[str(k)]["bytes"] / images["layered"][str(k)]["bytes"],
            "flox_without_nix_db_over_single": flox[str(k)]["bytes_without_nix_db"]
            / images["single"][str(k)]["bytes"],
        }
        for k in levels
    }
    return common.result(
        "disk",
        quick=quick,
        containerd=crinode.LINE,
        closure_paths=len(closure),
        application=app.describe(),
        target="flox <= layered images at every K",
        met=all(v["flox_over_layered"] <= 1.0 for v in per_k.values()),
        levels=per_k,
    )


def report(doc: dict) -> None:
    def mib(b: int) -> str:
        return f"{b / 2**20:.1f} MiB"

    rows = []
    for k, v in doc["levels"].items():
        rows.append(
            (
                f"K={k:>2}",
                f"flox {mib(v['flox']['bytes'])} (paths {mib(v['flox']['store_paths'])},"
                f" trees {mib(v['flox']['trees'])}, nix db {mib(v['flox']['nix_db'])}),"
                f" single-layer images {mib(v['single']['bytes'])},"
                f" layered images {mib(v['layered']['bytes'])};"
                f" flox/single {v['flox_over_single']:.2f}, flox/layered {v['flox_over_layered']:.2f}",
            )
        )
    common.print_table(rows)


def main() -> int:
    return common.bench_main(__doc__, run, report, common.LEVELS)


if __name__ == "__main__":
    sys.exit(main())
