"""`floxk env push` to a signed file:// cache and hub; shim.core.hub resolution over file and http."""

from __future__ import annotations

import json

import pytest

from floxk._lock import lock_environment
from floxk._push import push_environment
from floxk.cli import main
from shim.core import hub
from shim.core.errors import FloxkError, NotFoundError
from shim.core.lockfile import load_lock
from testkit.httpserve import StaticServer
from tests import attacker

pytestmark = pytest.mark.nix

HELLO = 'version = 1\n[install]\nhello.pkg-path = "hello"\n'


@pytest.fixture
def locked_env(tmp_path, catalog_flake):
    directory = tmp_path / "env"
    directory.mkdir()
    (directory / "manifest.toml").write_text(HELLO)
    lock_environment(directory, catalog=f"path:{catalog_flake}")
    return directory


def trust(tmp_path, signed_cache, **overrides):
    """A node's trust: the test key, its own state dir and chroot store."""
    args = dict(
        substituters=overrides.pop("substituters", None) or [],
        trusted_keys=[signed_cache.public_key],
        state_dir=str(tmp_path / "state"),
        store_root=str(tmp_path / "store"),
    )
    args.update(overrides)
    return hub.Trust(**args)


def narinfo(cache_root, store_path):
    hash_part = store_path.removeprefix("/nix/store/").split("-", 1)[0]
    return (cache_root / f"{hash_part}.narinfo").read_text()


def test_push_signs_the_closure_and_writes_generations(tmp_path, locked_env, signed_cache):
    cache = tmp_path / "cache"
    key_name = signed_cache.public_key.split(":", 1)[0]
    first = push_environment(
        locked_env, to=cache.as_uri(), name="alice/hello", signing_key=signed_cache.secret_key_file
    )
    assert first.ref == "alice/hello:1" and first.signed
    lock = load_lock(locked_env / "manifest.lock")
    hello = lock.packages[0].outputs["out"]
    assert first.paths == [hello]
    # The whole closure is in the cache, each path signed with our key.
    info = narinfo(cache, hello)
    busybox = next(r for r in info.split("References: ")[1].split("\n")[0].split())
    assert f"Sig: {key_name}:" in info
    assert f"Sig: {key_name}:" in narinfo(cache, "/nix/store/" + busybox)

    pointer = json.loads((cache / hub.record_path("alice", "hello", 1)).read_text())
    assert pointer["floxk-hub-record"] == 2 and "lock" not in pointer
    path, record = attacker.record_of(cache, "alice", "hello", 1)
    assert path == pointer["record"] and path.endswith("-floxk-alice-hello-1.json")
    assert (record["owner"], record["name"], record["generation"]) == ("alice", "hello", 1)
    assert record["digest"] == lock.digest() and record["lock"] == lock.raw
    assert f"Sig: {key_name}:" in narinfo(cache, path)  # the record is signed like the closure
    assert (cache / hub.latest_path("alice", "hello")).read_text().strip() == "1"

    second = push_environment(
        locked_env, to=cache.as_uri(), name="alice/hello", signing_key=signed_cache.secret_key_file
    )
    assert second.generation == 2
    assert (cache / hub.latest_path("alice", "hello")).read_text().strip() == "2"
    assert json.loads((cache / hub.record_path("alice", "hello", 1)).read_text()) == pointer


def test_unsigned_push_warns(tmp_path, locked_env):
    result = push_environment(locked_env, to=(tmp_path / "c").as_uri(), name="bob/hello")
    assert not result.signed and any("unsigned" in w for w in result.warnings)
    assert "Sig:" not in narinfo(tmp_path / "c", result.paths[0])
    record, _ = attacker.record_of(tmp_path / "c", "bob", "hello", 1)
    assert "Sig:" not in narinfo(tmp_path / "c", record)


def test_resolve_latest_and_explicit_generation(tmp_path, locked_env, signed_cache):
    cache = tmp_path / "cache"
    for _ in range(2):
        push_environment(
            locked_env,
            to=cache.as_uri(),
            name="alice/hello",
            signing_key=signed_cache.secret_key_file,
        )
    hubs = [(tmp_path / "empty-hub").as_uri(), cache.as_uri()]  # first hub lacks it
    node = trust(tmp_path, signed_cache, substituters=[cache.as_uri()])
    latest = hub.resolve("alice/hello", hubs, node)
    assert (latest.owner, latest.name, latest.generation) == ("alice", "hello", 2)
    assert latest.url.endswith("floxk/envs/alice/hello/2.json")
    assert latest.lock.digest() == load_lock(locked_env / "manifest.lock").digest()
    assert hub.resolve("alice/hello:1", hubs, node).generation == 1
    assert hub.peek("alice/hello", hubs).lock.digest() == latest.lock.digest()


def test_resolve_errors(tmp_path, locked_env, signed_cache):
    cache = tmp_path / "cache"
    push_environment(locked_env, to=cache.as_uri(), name="alice/hello")
    node = trust(tmp_path, signed_cache, substituters=[cache.as_uri()])
    with pytest.raises(NotFoundError, match="no environment alice/nope"):
        hub.resolve("alice/nope", [cache.as_uri()], node)
    with pytest.raises(NotFoundError, match="no generation 7 .latest is 1"):
        hub.resolve("alice/hello:7", [cache.as_uri()], node)
    for bad in ("alice", "../etc/passwd", "alice/hello:0", "alice/.hidden", "a/b/c"):
        with pytest.raises(FloxkError, match="not an environment reference"):
            hub.resolve(bad, [cache.as_uri()], node)
    with pytest.raises(NotFoundError, match="no hub"):
        hub.resolve("alice/hello", [], node)


def test_damaged_pointer_is_refused(tmp_path, locked_env, signed_cache):
    cache = tmp_path / "cache"
    push_environment(locked_env, to=cache.as_uri(), name="alice/hello")
    node = trust(tmp_path, signed_cache, substituters=[cache.as_uri()])
    pointer = attacker.pointer_file(cache, "alice", "hello", 1)
    for text, error in [
        ("{", "invalid JSON"),
        ('{"floxk-hub-record": 1, "lock": {}}', "not a signed floxk hub record"),
        (json.dumps(hub.make_pointer("alice", "hello", 1, "/etc/passwd")), "not a store path"),
        (json.dumps(hub.make_pointer("alice", "other", 1, "/nix/store/x.json")), "another"),
    ]:
        pointer.write_text(text)
        with pytest.raises(FloxkError, match=error):
            hub.resolve("alice/hello", [cache.as_uri()], node)


def test_resolve_over_http(tmp_path, locked_env, signed_cache):
    cache = tmp_path / "cache"
    push_environment(
        locked_env, to=cache.as_uri(), name="alice/hello", signing_key=signed_cache.secret_key_file
    )
    server = StaticServer(cache)
    try:
        url = server.url
        node = trust(tmp_path, signed_cache, substituters=[url])  # the record over http too
        assert hub.resolve("alice/hello", [url], node).generation == 1
        with pytest.raises(NotFoundError):
            hub.resolve("alice/other", [url], node)
    finally:
        server.close()


def test_push_refuses_non_file_caches_and_generations(tmp_path, locked_env):
    with pytest.raises(FloxkError, match="only file://"):
        push_environment(locked_env, to="https://cache.invalid", name="alice/hello")
    with pytest.raises(FloxkError, match="names a generation"):
        push_environment(locked_env, to=(tmp_path / "c").as_uri(), name="alice/hello:3")


def test_cli_push_json(tmp_path, locked_env, signed_cache, capsys):
    cache = tmp_path / "cache"
    argv = ["env", "push", str(locked_env), "--to", cache.as_uri(), "--name", "carol/hi"]
    argv += ["--signing-key", str(signed_cache.secret_key_file), "-o", "json"]
    with pytest.raises(SystemExit) as code:
        main(argv)
    assert code.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ref"] == "carol/hi:1" and data["generation"] == 1 and data["signed"]
    node = trust(tmp_path, signed_cache, substituters=[cache.as_uri()])
    assert hub.resolve(data["ref"], [cache.as_uri()], node).lock.digest() == data["digest"]
