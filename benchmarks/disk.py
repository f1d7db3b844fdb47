"""Node disk: K environments that share packages vs K images with the same content.

    python3 -m benchmarks.disk [--quick] [--levels 1,4,16] [--out DIR]

K applications on one toolchain: environment i installs busybox, hello and web (the busybox
test catalog) and sets APP = "i" in [vars], so each has its own lock digest and tree
while the packages are shared. On the flox side, all K are realized into one chroot store
(shim.core.realize, as pods would); bytes = the store paths + the trees + the chroot store's Nix
database directory (a fixed ~8 MiB: Nix keeps an 8 MiB `reserved` file there; a node that
uses its host's /nix/store already pays it), reported apart as well.

The image side ships the same files per application: image i holds the closure at
/nix/store, the environment tree at / and a per-application file /etc/app.env (one
application's build differs from the next, as separately built images do). Layers are
gzip-compressed as a registry would serve them and imported into a containerd 2.x daemon
(`ctr images import`, unpacked into overlayfs); bytes = content store + snapshots. Two
shapes, because they bound what image builds achieve:
  single   one layer per image (a typical Dockerfile COPY of the tree): nothing is shared
  layered  one layer per store path plus a small per-application layer (nix2container /
           buildLayeredImage style): shared layers are stored once
Bytes are blocks allocated on disk (du), each inode counted once.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, crinode  # noqa: E402
from testkit import harness  # noqa: E402
from testkit.images import build_images  # noqa: E402

PACKAGES = 'busybox.pkg-path = "busybox"\nhello.pkg-path = "hello"\nweb.pkg-path = "web"\n'
CONTENT = "io.containerd.content.v1.content"
SNAPSHOTS = "io.containerd.snapshotter.v1.overlayfs"


def manifest(i: int) -> str:
    return f'version = 1\n[install]\n{PACKAGES}[vars]\nAPP = "{i}"\n'


def publish_all(work: Path, k: int) -> tuple[dict, list[str]]:
    """Lock and push K environments to one signed cache; returns (hub info, refs)."""
    from e2e.catalog import prepare
    from floxk._lock import lock_environment
    from floxk._push import push_environment

    catalog = prepare(work / "catalog")
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
        (d / "manifest.toml").write_text(manifest(i))
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
    """Import images 1..K into a fresh containerd, measuring after each level."""
    line = crinode.containerd_line()
    base = build_images(work / f"base-{shape}")
    daemon = harness.Containerd(
        line=line,
        images={"pause": base["pause"]},
        flox_shim="/nonexistent",
        flox_runc="/nonexistent",
        env={"PATH": f"{line.bin_dir}:{crinode.SYSTEM_PATH}"},
    )
    daemon.start()
    try:
        root = daemon.root
        before = crinode.disk_usage(root / CONTENT, root / SNAPSHOTS)
        closure = envs[0].activation["closure"]
        out, imported = {}, 0
        for k in levels:
            for i in range(imported, k):
                app = crinode.file_layer({"etc/app.env": f"APP={i}\n".encode()})
                if shape == "single":
                    layers = [_merge_layers([crinode.env_layer(store, envs[i]), app])]
                else:
                    layers = [crinode.env_layer(store, envs[i], paths=[p]) for p in closure]
                    layers += [_tree_layer(envs[i]), app]
                image = crinode.write_image(
                    work / f"{shape}-{i}.tar",
                    f"floxk.bench/app{i}:{shape}",
                    layers,
                    gzip_layers=True,
                )
                daemon.ctr("images", "import", "--snapshotter", "overlayfs", str(image.archive))
                image.archive.unlink()
            imported = k
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


def _tree_layer(env) -> bytes:
    """The environment tree at / alone (symlinks into /nix/store)."""
    import io
    import os
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(env.path)):
            if entry != "activation.json":
                tar.add(env.path / entry, arcname=entry, filter=crinode._normalize)
    return buf.getvalue()


def _merge_layers(layers: list[bytes]) -> bytes:
    """One tar holding the members of several (a single-layer image build)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for layer in layers:
            with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
                for m in tar.getmembers():
                    out.addfile(m, tar.extractfile(m) if m.isfile() else None)
    return buf.getvalue()


def run(quick: bool, levels: list[int] | None = None) -> dict:
    levels = sorted(levels or ([1, 4] if quick else [1, 4, 16]))
    k_max = levels[-1]
    with tempfile.TemporaryDirectory(prefix="floxk-bench-disk-") as tmp:
        work = Path(tmp)
        common.note(f"locking and publishing {k_max} environments")
        hub_info, refs = publish_all(work / "hub", k_max)
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
            common.note(f"importing {k_max} {shape}-layer images into containerd")
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    a = ap.parse_args()
    doc = run(a.quick, a.levels)
    report(doc)
    print(f"wrote {common.write_json(doc, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
