"""Helpers for tests that drive the real runc: bundles, a chroot Nix store, env trees.

The env tree written here follows the realize layout (state_dir/envs/<digest>/ with
bin/ symlinks into /nix/store and activation.json) so the runc-side tests do not
depend on realization; the end-to-end tests use shim.core.realize itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

from shim.core.nix import base_options

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "touch", "id", "env", "ls", "sleep", "true")


def runc_path() -> str:
    found = shutil.which("runc")
    assert found, "runc must be installed (scripts/install-system.sh)"
    return found


def add_busybox_package(store_root: Path, work: Path) -> str:
    """A real store path (nix-store --add into a chroot store) with busybox, its applets and
    a `hello` script whose shebang is the environment's own shell."""
    pkg = work / "busybox-hello"
    (pkg / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, pkg / "bin" / "busybox")
    for a in APPLETS:
        (pkg / "bin" / a).symlink_to("busybox")
    hello = pkg / "bin" / "hello"
    hello.write_text('#!/run/floxk/env/bin/sh\necho "Hello, world!"\n')
    hello.chmod(0o755)
    out = subprocess.run(
        ["nix-store", *base_options(), "--store", str(store_root), "--add", str(pkg)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert out.startswith("/nix/store/")
    return out


def make_env_tree(state_dir: Path, digest: str, store_path: str, **activation) -> SimpleNamespace:
    tree = Path(state_dir) / "envs" / digest  # NodeConfig.state_dir is a str
    (tree / "bin").mkdir(parents=True)
    for name in (*APPLETS, "busybox", "hello"):
        (tree / "bin" / name).symlink_to(f"{store_path}/bin/{name}")
    act = {
        "digest": digest,
        "system": "x86_64-linux",
        "vars": {},
        "hook": None,
        "profile": None,
        "activate_mode": None,
        "packages": [store_path],
        "closure": [store_path],
        **activation,
    }
    (tree / "activation.json").write_text(json.dumps(act))
    return SimpleNamespace(digest=digest, path=tree, activation=act)


def make_bundle(
    path: Path, args: list[str], *, annotations: dict | None = None, env: list[str] | None = None
) -> Path:
    """An OCI bundle from `runc spec`, empty rootfs, no terminal."""
    (path / "rootfs").mkdir(parents=True)
    subprocess.run([runc_path(), "spec", "--bundle", str(path)], check=True)
    spec = json.loads((path / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    if env is not None:
        spec["process"]["env"] = env
    spec["annotations"] = annotations or {}
    (path / "config.json").write_text(json.dumps(spec, indent=2))
    return path


def write_node_toml(path: Path, **values) -> Path:
    """node.toml from keyword values: a dict is a table ([policy], [gc]), `credentials` a
    list of [[credentials]] tables."""
    credentials = values.pop("credentials", [])
    tables = {k: values.pop(k) for k in [k for k, v in values.items() if isinstance(v, dict)]}
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    for name, table in tables.items():
        if table:
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    for table in credentials:
        lines.append("[[credentials]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def hub_node_config(directory: Path, hub_url: str, cache_url: str, key: str, **values):
    """The shim.core.node.NodeConfig of a node of one hub (its URL, its cache's URL and its
    public key), with its state and store under `directory`; `values`: further settings."""
    from shim.core.node import NodeConfig

    settings = dict(
        hubs=[hub_url],
        substituters=[cache_url],
        trusted_public_keys=[key],
        state_dir=str(directory / "state"),
        store_root=str(directory / "store"),
    )
    return NodeConfig(**{**settings, **values})


def hub_node_toml(directory: Path, hub_url: str, key: str, **values) -> Path:
    """directory/node.toml for a node of one hub (its URL and public key), with its state
    and store under `directory`; `values`: further keys (policy=, runc=, ...)."""
    return write_node_toml(
        directory / "node.toml",
        hubs=[hub_url],
        trusted_public_keys=[key],
        state_dir=str(directory / "state"),
        store_root=str(directory / "store"),
        **values,
    )


# Environments published by publish_test_hub (owner "acme"), built from floxk's test catalog.
TEST_ENVS = {
    "hello": '[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n'
    '[vars]\nCOLOR = "blue"\n[hook]\non-activate = "echo hook-ran; export HOOKED=yes"\n',
    "plain": '[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n',
    "broken": '[install]\nweb.pkg-path = "web"\n',  # its store path is removed from the cache
}


def publish_test_hub(work: Path) -> SimpleNamespace:
    """Lock TEST_ENVS from the test catalog and push them, signed, to a file:// cache + hub.

    Returns url, key (public key line), cache (dir), digests {name: lock digest}.
    """
    from e2e.catalog import prepare
    from floxk._lock import lock_environment
    from floxk._push import push_environment

    catalog = prepare(work / "catalog")
    sk, pk = work / "key.sec", work / "key.pub"
    subprocess.run(
        ["nix-store", *base_options(), "--generate-binary-cache-key", "floxk-test-1", sk, pk],
        check=True,
    )
    cache, digests = work / "cache", {}
    for name, manifest in TEST_ENVS.items():
        d = work / name
        d.mkdir()
        (d / "manifest.toml").write_text("version = 1\n" + manifest)
        lock_environment(d, catalog=catalog)
        pushed = push_environment(d, to=f"file://{cache}", name=f"acme/{name}", signing_key=sk)
        digests[name] = pushed.digest
    web = next(p for p in pushed.paths if "-web-" in p)
    (cache / f"{Path(web).name.split('-')[0]}.narinfo").unlink()
    return SimpleNamespace(
        url=f"file://{cache}", key=pk.read_text().strip(), cache=cache, digests=digests
    )
