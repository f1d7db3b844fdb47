"""gc: trees in use stay (with their store paths); unused ones and their paths go."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from e2e import catalog
from floxk.cli import main
from shim.core import gc, hub
from shim.core.model import current_system
from shim.core.nix import invalid_paths
from shim.core.realize import realize
from testkit.nix import run_with_store
from tests.nixfixtures import publisher

pytestmark = [pytest.mark.nix, pytest.mark.root]


@pytest.fixture(scope="module")
def own_catalog(tmp_path_factory) -> str:
    """The test catalog built from a busybox of this run's own: the host's static busybox
    with trailing bytes unique to the run (the ELF loader ignores them), so every store
    path below (busybox-static and all that names it) is new. With the shared catalog's
    paths, any process on the machine running that busybox (an e2e pod, another test) is a
    runtime GC root to Nix and pins it: gc would then keep what the test says it frees."""
    if shutil.which("nix-store") is None:
        pytest.skip("needs Nix: run scripts/install-system.sh")
    work = tmp_path_factory.mktemp("gc-catalog")
    busybox = work / "busybox"
    salt = f"\nfloxk tests/env/test_gc {uuid.uuid4()}\n".encode()
    busybox.write_bytes(Path(catalog.DEFAULT_BUSYBOX).read_bytes() + salt)
    busybox.chmod(0o555)
    return catalog.prepare(work / "flake", busybox=busybox)


@pytest.fixture(scope="module")
def two_envs(own_catalog, signed_cache, tmp_path_factory):
    """hello (in use in the tests) and greeting (unused); both need busybox."""
    publish = publisher(own_catalog, signed_cache, tmp_path_factory.mktemp("gc-envs"))
    refs = [
        publish("gc-hello", 'version = 1\n[install]\nhello.pkg-path = "hello"\n'),
        publish("gc-greeting", 'version = 1\n[install]\ngreeting.pkg-path = "greeting"\n'),
    ]
    return [hub.peek(ref, [signed_cache.hub_url]).lock for ref in refs]


def realize_both(tmp_path, signed_cache, locks):
    return [
        realize(
            lock,
            system=current_system(),
            substituters=[signed_cache.url],
            trusted_keys=[signed_cache.public_key],
            store_root=tmp_path / "store",
            state_dir=tmp_path / "state",
        )
        for lock in locks
    ]


def test_gc_keeps_envs_in_use_and_frees_the_rest(tmp_path, signed_cache, two_envs):
    used, unused = realize_both(tmp_path, signed_cache, two_envs)
    bundle = tmp_path / "bundles" / "c1"
    bundle.mkdir(parents=True)
    gc.mark_in_use(tmp_path / "state", used.digest, "c1", bundle)
    greeting = unused.activation["packages"][0]
    busybox = next(p for p in used.activation["closure"] if p.endswith("-busybox-static"))

    dry = gc.collect(state_dir=tmp_path / "state", store_root=tmp_path / "store", dry_run=True)
    assert dry["freed_envs"] == [unused.digest] and greeting in dry["store_paths_deleted"]
    assert unused.path.exists() and not invalid_paths([greeting], store_root=tmp_path / "store")

    result = gc.collect(state_dir=tmp_path / "state", store_root=tmp_path / "store")
    assert result["freed_envs"] == [unused.digest]
    assert result["kept_envs"] == {used.digest: ["c1"]}
    assert result["store_paths_deleted"] == [greeting]  # busybox is still needed by hello
    assert not unused.path.exists()
    assert invalid_paths([greeting], store_root=tmp_path / "store") == [greeting]
    assert invalid_paths([busybox], store_root=tmp_path / "store") == []
    ran = run_with_store(tmp_path / "store", [str(used.path / "bin" / "hello")])
    assert ran.stdout == "hello from floxk\n"

    # Once the container's bundle is gone the use is dead; then everything goes.
    bundle.rmdir()
    result = gc.collect(state_dir=tmp_path / "state", store_root=tmp_path / "store")
    assert result["freed_envs"] == [used.digest]
    assert sorted(result["store_paths_deleted"]) == sorted(used.activation["closure"])
    assert list((tmp_path / "state" / "envs").iterdir()) == []

    # And a freed environment realizes again from the cache.
    again = realize_both(tmp_path, signed_cache, two_envs[:1])[0]
    assert again.path == used.path and (again.path / "activation.json").exists()


def test_release_and_cli(tmp_path, signed_cache, two_envs, capsys):
    used, _ = realize_both(tmp_path, signed_cache, two_envs)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    gc.mark_in_use(tmp_path / "state", used.digest, "c2", bundle)
    assert gc.live_users(tmp_path / "state", used.digest) == ["c2"]
    gc.release(tmp_path / "state", "c2")
    assert gc.live_users(tmp_path / "state", used.digest) == []

    argv = ["env", "gc", "--store", str(tmp_path / "store"), "--state-dir", str(tmp_path / "state")]
    with pytest.raises(SystemExit) as code:
        main([*argv, "-o", "json"])
    assert code.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["freed_envs"]) == 2 and data["kept_envs"] == {}
    assert not Path(tmp_path / "state" / "envs" / used.digest).exists()


def test_invalid_ids_are_refused(tmp_path):
    with pytest.raises(Exception, match="invalid container id"):
        gc.mark_in_use(tmp_path, "0" * 64, "../escape", tmp_path)
    with pytest.raises(Exception, match="invalid digest"):
        gc.mark_in_use(tmp_path, "not-a-digest", "c1", tmp_path)


def test_host_store_realize_and_gc_dry_run(tmp_path, signed_cache, two_envs):
    """On the host's own store: roots under /nix/var/nix/gcroots/floxk; gc deletes only the
    freed closures (dry run here: other tests need the catalog's paths in the host store)."""
    lock = two_envs[0]
    env = realize(
        lock,
        system=current_system(),
        substituters=[signed_cache.url],
        trusted_keys=[signed_cache.public_key],
        store_root=None,
        state_dir=tmp_path / "state",
    )
    roots = Path("/nix/var/nix/gcroots/floxk") / env.digest
    try:
        assert [os.readlink(p) for p in roots.iterdir()] == env.activation["packages"]
        result = gc.collect(state_dir=tmp_path / "state", store_root=None, dry_run=True)
        assert result["freed_envs"] == [env.digest]
        assert set(result["store_paths_deleted"]) <= set(env.activation["closure"])
        assert env.path.exists() and roots.exists()
    finally:
        shutil.rmtree(roots, ignore_errors=True)
