"""The store view: the mounts that make a flox container's /nix/store, built once per tree.

On a fake store in the test's temp dir (a directory, a file and a symlink as store paths);
what runc makes of the mounts is tested in tests/shim/test_runc_real.py and through CRI in
tests/cri/test_store_view.py.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from shim.core import gc, storeview
from shim.core.errors import RealizeError
from shim.core.node import NodeConfig, parse_node_config

S = "/nix/store/"
CLOSURE = [S + "aaaa-busybox", S + "bbbb-hello", S + "cccc-script", S + "dddd-alias"]


@pytest.fixture
def node(tmp_path):
    store = tmp_path / "root" / "nix" / "store"
    (store / "aaaa-busybox" / "bin").mkdir(parents=True)
    (store / "bbbb-hello" / "bin").mkdir(parents=True)
    (store / "cccc-script").write_text("#!/bin/sh\n")
    (store / "dddd-alias").symlink_to("bbbb-hello")
    (store / "eeee-other-tenant").mkdir()
    return NodeConfig(store_root=str(tmp_path / "root"), state_dir=str(tmp_path / "state"))


def _env(digest="d1", closure=CLOSURE):
    return SimpleNamespace(digest=digest, activation={"closure": list(closure)})


def test_mounts_are_the_closure_only_read_only_over_a_skeleton(node):
    mounts = storeview.store_mounts(node, _env())
    view = storeview.view_path(node.state_dir, "d1")
    assert mounts[0] == {
        "destination": "/nix/store",
        "type": "bind",
        "source": f"{view}/store",
        "options": ["rbind", "ro", "nosuid", "nodev"],
    }
    binds = {m["destination"]: m for m in mounts[1:]}
    # the symlink is not bound: it is a link in the skeleton, followed inside the view
    assert sorted(binds) == [S + "aaaa-busybox", S + "bbbb-hello", S + "cccc-script"]
    for dest, m in binds.items():
        assert m["source"] == os.path.join(node.store_dir, dest.removeprefix(S))
        assert m["options"] == ["rbind", "ro", "nosuid", "nodev"]
    skeleton = Path(view, "store")
    assert sorted(os.listdir(skeleton)) == [
        "aaaa-busybox",
        "bbbb-hello",
        "cccc-script",
        "dddd-alias",
    ]
    assert (skeleton / "aaaa-busybox").is_dir() and not any((skeleton / "aaaa-busybox").iterdir())
    assert (skeleton / "cccc-script").is_file() and (skeleton / "cccc-script").stat().st_size == 0
    assert os.readlink(skeleton / "dddd-alias") == "bbbb-hello"
    assert "eeee-other-tenant" not in os.listdir(skeleton)


def test_off_or_writable_is_the_whole_store(node, tmp_path):
    off = parse_node_config(f'store_view = false\nstate_dir = "{tmp_path}/s2"\n')
    assert off.store_view is False and NodeConfig().store_view is True
    [whole] = storeview.store_mounts(off, _env())
    assert whole["source"] == "/nix/store" and "ro" in whole["options"]
    [rw] = storeview.store_mounts(node, _env(), writable=True)
    assert rw["source"] == node.store_dir and "rw" in rw["options"]
    assert not (tmp_path / "s2").exists() and not (tmp_path / "state").exists()


def test_built_once_and_shared_then_read(node):
    first = storeview.store_mounts(node, _env())
    binds = Path(storeview.view_path(node.state_dir, "d1"), "binds.json")
    stamp = binds.stat().st_mtime_ns
    # A second pod of the environment reads the view; even a different closure list
    # (never the case for one digest) does not rebuild it.
    assert storeview.store_mounts(node, _env(closure=CLOSURE[:1])) == first
    assert binds.stat().st_mtime_ns == stamp


def test_concurrent_first_creates_build_one_view(node):
    results, errors = [], []

    def create():
        try:
            results.append(storeview.store_mounts(node, _env()))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(r == results[0] for r in results)
    assert os.listdir(Path(node.state_dir, "tmp")) == []


def test_a_half_made_view_is_never_used_and_is_rebuilt(node):
    view = Path(storeview.view_path(node.state_dir, "d1"))
    (view / "store").mkdir(parents=True)  # a view without binds.json: never complete
    mounts = storeview.store_mounts(node, _env())
    assert len(mounts) == 4 and json.loads((view / "binds.json").read_text())


def test_missing_path_fails_and_leaves_nothing(node):
    with pytest.raises(RealizeError) as e:
        storeview.store_mounts(node, _env(closure=[*CLOSURE, S + "ffff-gone"]))
    assert "ffff-gone" in e.value.message and "floxk-node gc" in e.value.hint
    assert not Path(storeview.view_path(node.state_dir, "d1")).exists()
    assert os.listdir(Path(node.state_dir, "tmp")) == []


@pytest.mark.parametrize("bad", ["/etc", S, S + "../etc", S + "a/b", S + ".x", "relative"])
def test_a_closure_entry_that_is_not_a_store_path_is_refused(node, bad):
    with pytest.raises(RealizeError):
        storeview.store_mounts(node, _env(closure=[bad]))


def test_gc_removes_the_view_with_its_tree(node):
    from shim.core.realize import env_path

    tree = env_path(node.state_dir, "d1")
    tree.mkdir(parents=True)
    (tree / "activation.json").write_text(json.dumps({"digest": "d1", "closure": CLOSURE}))
    storeview.store_mounts(node, _env())
    orphan = _env("d2")
    storeview.store_mounts(node, orphan)  # a view whose tree is gone
    # collect()'s two steps that touch views (its store GC needs Nix: tests/shim/test_gc.py)
    gc._remove_env(Path(node.state_dir), Path(node.store_root), "d1")
    gc._remove_orphans(Path(node.state_dir), Path(node.store_root))
    assert not tree.exists()
    assert os.listdir(Path(node.state_dir, "views")) == []
