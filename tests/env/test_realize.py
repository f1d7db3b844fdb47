"""Realization on a node: signed substitution into a chroot store, one tree per digest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from floxk.cli import main
from shim.core import hub
from shim.core.errors import LockError, RealizeError
from shim.core.model import current_system
from shim.core.nix import invalid_paths
from shim.core.realize import realize
from shim.core.tree import tree_link
from testkit.nix import make_key_pair, run_with_store

pytestmark = [pytest.mark.nix, pytest.mark.root]

HELLO = 'version = 1\n[install]\nhello.pkg-path = "hello"\n'
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hello_ref(publish_env):
    return publish_env(
        "realize-hello",
        HELLO
        + '[vars]\nGREETING = "hi"\n[hook]\non-activate = "echo on"\n'
        + '[profile]\ncommon = "echo profile"\n[options]\nactivate.mode = "run"\n',
    )


def node(tmp_path, signed_cache, **overrides):
    """Keyword arguments for realize() as a node with its own store and state dir."""
    args = dict(
        system=current_system(),
        substituters=[signed_cache.url],
        trusted_keys=[signed_cache.public_key],
        store_root=tmp_path / "store",
        state_dir=tmp_path / "state",
    )
    args.update(overrides)
    return args


def log_lines(state_dir, event):
    path = Path(state_dir) / "realize.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split()[3:] for line in lines if line.split()[2] == event]


def test_realize_from_hub_and_run(tmp_path, signed_cache, hello_ref):
    record = hub.peek(hello_ref, [signed_cache.hub_url])
    env = realize(record.lock, **node(tmp_path, signed_cache))

    assert env.path == tmp_path / "state" / "envs" / record.lock.digest()
    activation = json.loads((env.path / "activation.json").read_text())
    assert activation == env.activation
    assert activation["vars"] == {"GREETING": "hi"}
    assert activation["hook"] == "echo on" and activation["profile"] == "echo profile"
    assert activation["activate_mode"] == "run"
    hello = record.lock.packages_for(current_system())[0].outputs["out"]
    assert activation["packages"] == [hello]
    assert len(activation["closure"]) == 2 and hello in activation["closure"]
    # Symlinks are logical /nix/store paths; the store itself is the chroot store.
    assert tree_link(env.path, "bin") == f"{hello}/bin"
    for path in activation["closure"]:
        assert (tmp_path / "store" / path.lstrip("/")).exists()

    # Run it the way a container sees it: the chroot store mounted at /nix/store.
    ran = run_with_store(tmp_path / "store", [str(env.path / "bin" / "hello")])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello from floxk\n"

    # GC roots keep the installed path alive.
    roots = tmp_path / "store/nix/var/nix/gcroots/floxk" / env.digest
    assert [os.readlink(p) for p in roots.iterdir()] == [hello]

    # Warm: same tree, nothing substituted or built again.
    assert len(log_lines(tmp_path / "state", "substitute")) == 2
    again = realize(record.lock, **node(tmp_path, signed_cache))
    assert again == env
    assert len(log_lines(tmp_path / "state", "substitute")) == 2
    assert len(log_lines(tmp_path / "state", "tree")) == 1


def test_priorities_decide_clashes(tmp_path, signed_cache, publish_env):
    both = HELLO + 'greeting.pkg-path = "greeting"\n'
    for name, extra, expected in [
        ("prio-hello", "greeting.priority = 6\n", "hello from floxk\n"),
        ("prio-greeting", "greeting.priority = 1\n", "greetings from greeting\n"),
    ]:
        lock = hub.peek(publish_env(name, both + extra), [signed_cache.hub_url]).lock
        env = realize(lock, **node(tmp_path, signed_cache))
        ran = run_with_store(tmp_path / "store", [str(env.path / "bin" / "hello")])
        assert ran.stdout == expected
        assert (env.path / "bin" / "greet").is_symlink()  # merged bin/: both packages

    lock = hub.peek(publish_env("prio-equal", both), [signed_cache.hub_url]).lock
    with pytest.raises(RealizeError, match="both provide bin/hello with priority 5"):
        realize(lock, **node(tmp_path, signed_cache))
    assert not (tmp_path / "state" / "envs" / lock.digest()).exists()


def _links(tree: Path) -> dict[str, str]:
    return {
        str(p.relative_to(tree)): os.readlink(p) for p in sorted(tree.rglob("*")) if p.is_symlink()
    }


def test_tree_links_are_short_and_only_package_links_reach_the_store(
    tmp_path, signed_cache, publish_env
):
    """A merged directory costs inodes, not blocks: every link but the package links is a
    relative one under 60 bytes (kept inside the inode on ext4 and tmpfs)."""
    both = HELLO + 'greeting.pkg-path = "greeting"\ngreeting.priority = 6\n'
    lock = hub.peek(publish_env("short-links", both), [signed_cache.hub_url]).lock
    env = realize(lock, **node(tmp_path, signed_cache))
    links = _links(env.path)
    packages = {k: v for k, v in links.items() if k.startswith(".pkgs/")}
    assert sorted(packages.values()) == sorted(env.activation["packages"])
    others = {k: v for k, v in links.items() if k not in packages}
    assert "bin/hello" in others and "bin/greet" in others  # bin/ is merged
    assert all(not t.startswith("/") and len(t) < 60 for t in others.values()), others
    out = {p.install_id: p.outputs["out"] for p in lock.packages_for(current_system())}
    hello, greeting = out["hello"], out["greeting"]
    assert tree_link(env.path, "bin/hello") == f"{hello}/bin/hello"  # priority 5 beats 6
    assert tree_link(env.path, "bin/greet") == f"{greeting}/bin/greet"
    for name in ("hello", "greet"):  # through the relative link and the package link
        ran = run_with_store(tmp_path / "store", [str(env.path / "bin" / name)])
        assert ran.returncode == 0 and ran.stdout, ran.stderr
    if _fs_type(env.path) in ("ext4", "tmpfs"):  # filesystems that inline short targets
        assert sum(os.lstat(env.path / k).st_blocks for k in others) == 0


def _fs_type(path: Path) -> str:
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, where, fs, *_ = line.split()
        if str(path).startswith(where.rstrip("/") + "/") and len(where) > len(best):
            best, kind = where, fs
    return kind


def test_a_tree_of_the_old_format_is_still_used(tmp_path, signed_cache, publish_env):
    """Trees built before the package links (every link an absolute store path) stay
    valid: found ready, not rebuilt, and they still run."""
    both = HELLO + 'greeting.pkg-path = "greeting"\ngreeting.priority = 6\n'
    lock = hub.peek(publish_env("old-format", both), [signed_cache.hub_url]).lock
    env = realize(lock, **node(tmp_path, signed_cache))
    for rel in _links(env.path):  # rewrite it as the old code wrote it
        if not rel.startswith(".pkgs"):
            target = tree_link(env.path, rel)
            os.unlink(env.path / rel)
            os.symlink(target, env.path / rel)
    shutil.rmtree(env.path / ".pkgs")
    assert all(t.startswith("/nix/store/") for t in _links(env.path).values())
    assert realize(lock, **node(tmp_path, signed_cache)) == env
    assert len(log_lines(tmp_path / "state", "tree")) == 1  # not rebuilt
    ran = run_with_store(tmp_path / "store", [str(env.path / "bin" / "hello")])
    assert ran.stdout == "hello from floxk\n"


def test_no_package_for_this_system(tmp_path, signed_cache, hello_ref):
    lock = hub.peek(hello_ref, [signed_cache.hub_url]).lock
    with pytest.raises(LockError, match="no packages for riscv64-linux.*locked for"):
        realize(lock, **node(tmp_path, signed_cache, system="riscv64-linux"))


def assert_nothing_left(tmp_path, digest):
    assert not (tmp_path / "state" / "envs" / digest).exists()
    leftovers = (
        list((tmp_path / "state" / "tmp").glob("*")) if (tmp_path / "state/tmp").exists() else []
    )
    assert leftovers == []


def test_path_missing_from_every_substituter(tmp_path, signed_cache, hello_ref):
    lock = hub.peek(hello_ref, [signed_cache.hub_url]).lock
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    with pytest.raises(RealizeError) as info:
        realize(lock, **node(tmp_path, signed_cache, substituters=[empty.as_uri()]))
    assert "push the environment" in info.value.hint
    assert_nothing_left(tmp_path, lock.digest())


def test_tampered_nar_is_refused(tmp_path, signed_cache, hello_ref):
    lock = hub.peek(hello_ref, [signed_cache.hub_url]).lock
    cache = tmp_path / "cache"
    shutil.copytree(signed_cache.root, cache)
    hello = lock.packages_for(current_system())[0].outputs["out"]
    info = (cache / (Path(hello).name.split("-")[0] + ".narinfo")).read_text()
    nar = cache / next(line[5:] for line in info.splitlines() if line.startswith("URL: "))
    data = bytearray(nar.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    nar.write_bytes(bytes(data))

    with pytest.raises(RealizeError) as info:
        realize(lock, **node(tmp_path, signed_cache, substituters=[cache.as_uri()]))
    assert "tampered" in info.value.hint
    assert_nothing_left(tmp_path, lock.digest())
    assert invalid_paths([hello], store_root=tmp_path / "store") == [hello]


def test_untrusted_key_is_refused(tmp_path, signed_cache, hello_ref):
    lock = hub.peek(hello_ref, [signed_cache.hub_url]).lock
    other_key, _ = make_key_pair(tmp_path / "keys", "someone-else-1")
    with pytest.raises(RealizeError) as info:
        realize(lock, **node(tmp_path, signed_cache, trusted_keys=[other_key]))
    assert "signed by a trusted key" in info.value.hint
    assert_nothing_left(tmp_path, lock.digest())


def test_unsigned_needs_no_keys_and_the_explicit_opt_out(tmp_path, signed_cache, hello_ref):
    from floxk._push import push_environment

    lock = hub.peek(hello_ref, [signed_cache.hub_url]).lock
    # An unsigned cache with the same paths: refused by default, even without keys.
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / "manifest.lock").write_text(json.dumps(lock.raw))
    unsigned = tmp_path / "unsigned"
    push_environment(env_dir, to=unsigned.as_uri(), name="u/hello")
    with pytest.raises(RealizeError, match="no trusted public keys"):
        realize(
            lock, **node(tmp_path, signed_cache, substituters=[unsigned.as_uri()], trusted_keys=[])
        )
    with pytest.raises(RealizeError):  # keys given: the opt-out does not apply
        realize(
            lock,
            **node(tmp_path, signed_cache, substituters=[unsigned.as_uri()]),
            insecure_accept_unsigned=True,
        )
    env = realize(
        lock,
        **node(tmp_path, signed_cache, substituters=[unsigned.as_uri()], trusted_keys=[]),
        insecure_accept_unsigned=True,
    )
    assert tree_link(env.path, "bin").startswith("/nix/store/")


REALIZE_SCRIPT = """
import json, sys
from pathlib import Path
from shim.core import hub
from shim.core.realize import realize
a = json.loads(sys.argv[1])
if a.get("hold"):  # stop half way, after substitution: touch the file, then wait to be killed
    import time, shim.core.realize as r
    substitute = r._substitute
    def held(*args, **kwargs):
        substitute(*args, **kwargs)
        Path(a["hold"]).touch()
        time.sleep(120)
    r._substitute = held
lock = hub.peek(a["ref"], [a["hub"]]).lock
env = realize(lock, system=a["system"], substituters=[a["hub"]], trusted_keys=[a["key"]],
              store_root=Path(a["store"]), state_dir=Path(a["state"]))
print(env.path)
"""


def spawn_realize(tmp_path, signed_cache, ref, hold=None):
    args = {
        "hold": hold,
        "ref": ref,
        "hub": signed_cache.hub_url,
        "key": signed_cache.public_key,
        "system": current_system(),
        "store": str(tmp_path / "store"),
        "state": str(tmp_path / "state"),
    }
    return subprocess.Popen(
        [sys.executable, "-c", REALIZE_SCRIPT, json.dumps(args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killing it kills its nix too
    )


def test_eight_concurrent_realizations_share_one(tmp_path, signed_cache, publish_env):
    ref = publish_env("concurrent", HELLO + 'web.pkg-path = "web"\n')
    procs = [spawn_realize(tmp_path, signed_cache, ref) for _ in range(8)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    substituted = [fields[1] for fields in log_lines(tmp_path / "state", "substitute")]
    assert len(substituted) == 3  # hello, web, busybox
    assert len(set(substituted)) == len(substituted)  # exactly once each
    assert len(log_lines(tmp_path / "state", "tree")) == 1


@pytest.mark.parametrize("at", ["lock taken", "substituted"])
def test_killed_half_way_then_completes(tmp_path, signed_cache, publish_env, at):
    ref = publish_env("killed", HELLO + 'web.pkg-path = "web"\n')
    lock = hub.peek(ref, [signed_cache.hub_url]).lock
    hold = tmp_path / "substituted"
    proc = spawn_realize(tmp_path, signed_cache, ref, hold=str(hold))
    waited_for = tmp_path / "state" / "locks" / f"{lock.digest()}.lock"
    if at == "substituted":
        waited_for = hold
    deadline = time.monotonic() + 60
    while not waited_for.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed, not finished
    assert not (tmp_path / "state" / "envs" / lock.digest()).exists()

    env = realize(lock, **node(tmp_path, signed_cache))
    ran = run_with_store(tmp_path / "store", [str(env.path / "bin" / "hello")])
    assert ran.stdout == "hello from floxk\n"
    assert sorted(os.listdir(env.path / "bin")) == ["hello", "web-serve"]
    assert list((tmp_path / "state" / "tmp").glob("*")) == []
    assert len(log_lines(tmp_path / "state", "tree")) == 1


def test_cli_realize_json(tmp_path, signed_cache, hello_ref, capsys):
    argv = ["env", "realize", hello_ref, "--hub", signed_cache.hub_url]
    argv += ["--substituter", signed_cache.url, "--trusted-key", signed_cache.public_key]
    argv += ["--store", str(tmp_path / "store"), "--state-dir", str(tmp_path / "state")]
    with pytest.raises(SystemExit) as code:
        main([*argv, "-o", "json"])
    assert code.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert Path(data["path"]) == tmp_path / "state" / "envs" / data["digest"]
    assert (Path(data["path"]) / "activation.json").exists()
