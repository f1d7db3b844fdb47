"""Rewritten specs run under the real runc on an empty rootfs, with a real (chroot) Nix store."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from shim.core.annotations import parse_annotations
from shim.core.node import NodeConfig
from shim.core.spec import rewrite_spec
from testkit.oci import add_busybox_package, make_bundle, make_env_tree, runc_path

pytestmark = [pytest.mark.nix, pytest.mark.root]

ANN = {"flox.dev/environment": "acme/tools", "io.kubernetes.cri.container-type": "container"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    work = tmp_path_factory.mktemp("store")
    root = work / "root"
    return root, add_busybox_package(root, work)


def _run(tmp_path, store, args, **activation):
    root, pkg = store
    node = NodeConfig(store_root=root, state_dir=tmp_path / "state")
    env = make_env_tree(node.state_dir, "d" + uuid.uuid4().hex[:8], pkg, **activation)
    bundle = make_bundle(tmp_path / "bundle", args, annotations=ANN, env=["PATH=/usr/bin:/bin"])
    spec = json.loads((bundle / "config.json").read_text())
    new = rewrite_spec(spec, env, node, parse_annotations(ANN))
    (bundle / "config.json").write_text(json.dumps(new))
    return subprocess.run(
        [runc_path(), "--root", str(tmp_path / "runc"), "run", "--bundle", str(bundle),
         "t-" + uuid.uuid4().hex[:12]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_env_program_runs_on_empty_rootfs(tmp_path, store):
    r = _run(tmp_path, store, ["hello"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello, world!\n"


def test_pid1_is_the_command_and_vars_are_visible(tmp_path, store):
    r = _run(tmp_path, store, ["sh", "-c", 'echo "$$ $FLOX_ENV $COLOR"'], vars={"COLOR": "blue"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1 /run/floxk/env blue\n"


def test_hook_runs_before_the_command(tmp_path, store):
    r = _run(
        tmp_path, store, ["sh", "-c", 'echo "cmd sees $FROM_HOOK"'],
        hook="echo hook-ran\nexport FROM_HOOK=yes",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hook-ran\ncmd sees yes\n"


def test_store_and_env_tree_are_read_only(tmp_path, store):
    root, pkg = store
    r = _run(
        tmp_path, store, ["sh", "-c", f"touch /nix/store/x; touch {pkg}/y; touch /run/floxk/env/z"]
    )
    assert r.returncode != 0
    assert r.stderr.count("Read-only file system") == 3, r.stderr
    assert not (root / "nix" / "store" / "x").exists()
    assert not (Path(str(root) + pkg) / "y").exists()


def test_store_view_shows_only_the_closure(tmp_path, store):
    """The store view under the real runc: /nix/store lists the environment's closure and
    nothing else of the node's store (another tenant's path stays invisible)."""
    root, pkg = store
    other = root / "nix" / "store" / "0000000000000000000000000000000a-other-tenant"
    other.mkdir(exist_ok=True)
    r = _run(tmp_path, store, ["sh", "-c", "ls -a /nix/store; ls /nix/store/*-other-tenant"])
    assert r.returncode != 0
    assert r.stdout.split() == sorted([".", "..", Path(pkg).name]), r.stdout
    assert "other-tenant" in r.stderr and "No such file" in r.stderr
