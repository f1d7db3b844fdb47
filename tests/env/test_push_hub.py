"""`floxk env push` to a signed file:// cache and hub; shim.hub resolution over file and http."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest

from floxk._lock import lock_environment
from floxk._push import push_environment
from floxk.cli import main
from shim import hub
from shim.errors import FloxkError, NotFoundError
from shim.model import load_lock

pytestmark = pytest.mark.nix

HELLO = 'version = 1\n[install]\nhello.pkg-path = "hello"\n'


@pytest.fixture
def locked_env(tmp_path, catalog_flake):
    directory = tmp_path / "env"
    directory.mkdir()
    (directory / "manifest.toml").write_text(HELLO)
    lock_environment(directory, catalog=f"path:{catalog_flake}")
    return directory


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

    record = json.loads((cache / hub.record_path("alice", "hello", 1)).read_text())
    assert record["digest"] == lock.digest() and record["lock"] == lock.raw
    assert (cache / hub.latest_path("alice", "hello")).read_text().strip() == "1"

    second = push_environment(
        locked_env, to=cache.as_uri(), name="alice/hello", signing_key=signed_cache.secret_key_file
    )
    assert second.generation == 2
    assert (cache / hub.latest_path("alice", "hello")).read_text().strip() == "2"
    assert json.loads((cache / hub.record_path("alice", "hello", 1)).read_text()) == record


def test_unsigned_push_warns(tmp_path, locked_env):
    result = push_environment(locked_env, to=(tmp_path / "c").as_uri(), name="bob/hello")
    assert not result.signed and any("unsigned" in w for w in result.warnings)
    assert "Sig:" not in narinfo(tmp_path / "c", result.paths[0])


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
    latest = hub.resolve("alice/hello", hubs)
    assert (latest.owner, latest.name, latest.generation) == ("alice", "hello", 2)
    assert latest.url.endswith("floxk/envs/alice/hello/2.json")
    assert latest.lock.digest() == load_lock(locked_env / "manifest.lock").digest()
    assert hub.resolve("alice/hello:1", hubs).generation == 1


def test_resolve_errors(tmp_path, locked_env):
    cache = tmp_path / "cache"
    push_environment(locked_env, to=cache.as_uri(), name="alice/hello")
    with pytest.raises(NotFoundError, match="no environment alice/nope"):
        hub.resolve("alice/nope", [cache.as_uri()])
    with pytest.raises(NotFoundError, match="no generation 7 .latest is 1"):
        hub.resolve("alice/hello:7", [cache.as_uri()])
    for bad in ("alice", "../etc/passwd", "alice/hello:0", "alice/.hidden", "a/b/c"):
        with pytest.raises(FloxkError, match="not an environment reference"):
            hub.resolve(bad, [cache.as_uri()])
    with pytest.raises(NotFoundError, match="no hub"):
        hub.resolve("alice/hello", [])


def test_damaged_record_is_refused(tmp_path, locked_env):
    cache = tmp_path / "cache"
    push_environment(locked_env, to=cache.as_uri(), name="alice/hello")
    path = cache / hub.record_path("alice", "hello", 1)
    record = json.loads(path.read_text())
    record["lock"]["packages"][0]["priority"] = 1  # changed after publishing
    path.write_text(json.dumps(record))
    with pytest.raises(FloxkError, match="digest does not match"):
        hub.resolve("alice/hello", [cache.as_uri()])


def test_resolve_over_http(tmp_path, locked_env):
    cache = tmp_path / "cache"
    push_environment(locked_env, to=cache.as_uri(), name="alice/hello")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(cache))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert hub.resolve("alice/hello", [url]).generation == 1
        with pytest.raises(NotFoundError):
            hub.resolve("alice/other", [url])
    finally:
        server.shutdown()


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
    assert hub.resolve(data["ref"], [cache.as_uri()]).lock.digest() == data["digest"]
