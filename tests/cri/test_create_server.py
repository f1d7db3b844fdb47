"""The node's create server (shim.server) through CRI on the line under test.

The fronts are rendered with the state dir's server (as `floxk shim install` renders them):
the first flox sandbox's prefetch stays as the server, and from then on app containers'
creates and sandboxes' prefetches go to it instead of starting Python. Every test checks
what the container sees, so a server that answers wrongly (or a front that trusts a server
it should not) fails here; `served` create events in the node log say which path ran.
containerd 1.6 never runs the wrapper shim (no prefetch, so no server): there the same pods
must run through the Python side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from shim import server
from testkit.images import STUB_IMAGE
from testkit.oci import publish_test_hub
from tests import attacker
from tests.cri.conftest import checked_cri

pytestmark = [pytest.mark.cri, pytest.mark.root, pytest.mark.nix]

NOBODY = 65534


def _push_generations(hub, work: Path) -> str:
    """acme/moving, generations 1 (COLOR one) and 2 (COLOR two); latest left at 1."""
    from floxk._lock import lock_environment
    from floxk._push import push_environment

    d = work / "moving"
    d.mkdir()
    for color in ("one", "two"):
        (d / "manifest.toml").write_text(
            f'version = 1\n[install]\nbusybox.pkg-path = "busybox"\n[vars]\nCOLOR = "{color}"\n'
        )
        lock_environment(d, catalog=work / "hub" / "catalog")
        push_environment(d, to=hub.url, name="acme/moving", signing_key=work / "hub" / "key.sec")
    attacker.set_latest(hub.cache, "acme", "moving", 1)
    return "acme/moving"


@pytest.fixture(scope="module")
def node(start_flox_node, containerd_line, tmp_path_factory):
    work = tmp_path_factory.mktemp("server-node")
    hub = publish_test_hub(work / "hub")
    moving = _push_generations(hub, work)
    state = work / "state"
    srv = server.server_dir(state)
    daemon = start_flox_node(work, server=srv, hubs=[hub.url], trusted_public_keys=[hub.key])
    no_wrapper = containerd_line.version.startswith("1.6")
    yield {"daemon": daemon, "cri": daemon.cri, "state": state, "hub": hub,
           "moving": moving, "no_wrapper": no_wrapper}  # fmt: skip
    daemon.stop()
    server.stop(state)


@pytest.fixture
def cri(request, node):
    yield from checked_cri(request, node)


def creates(node) -> list[dict]:
    log = node["state"] / "floxk.log"
    if not log.exists():
        return []
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return [e for e in map(json.loads, lines) if e.get("event") == "create"]


def served(node) -> int:
    return sum(1 for e in creates(node) if e.get("served"))


def run(cri, ref, command, name="app"):
    pod = cri.run_pod(name, {"flox.dev/environment": ref})
    cid = cri.create_container(pod, name, STUB_IMAGE, command=command)
    cri.start(cid)
    assert cri.wait_exit(cid) == 0, cri.logs(cid)
    out = cri.logs(cid, contains="\n")
    cri.remove_pod(pod)
    return out


COLOR = ["sh", "-c", 'echo "$COLOR ${HOOKED:-nohook} $FLOX_ENV"']


def wait_for_server(node, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = server.running(node["state"])
        if pid is not None:
            return pid
        time.sleep(0.05)
    raise AssertionError("no create server came up after a flox sandbox's prefetch")


def ensure_server(cri, node) -> int:
    """A pod of acme/plain (its prefetch leaves the server when none runs)."""
    if node["no_wrapper"]:
        pytest.skip("containerd 1.6 never runs the wrapper shim: no prefetch, no server")
    pid = server.running(node["state"])
    if pid is None:
        assert run(cri, "acme/plain", ["hello"], name="warm") == "hello from floxk\n"
        pid = wait_for_server(node)
    return pid


def test_pods_after_the_first_are_created_through_the_server(cri, node):
    ensure_server(cri, node)
    before = served(node)
    assert run(cri, "acme/hello", COLOR) == "hook-ran\nblue yes /run/floxk/env\n"
    assert run(cri, "acme/plain", ["hello"]) == "hello from floxk\n"
    assert served(node) == before + 2  # acme/hello cold (realized by a server child), plain warm


class no_new_server:  # noqa: N801 -- used like a function
    """Stop the server and hold its lock, so no prefetch can become one meanwhile."""

    def __init__(self, node) -> None:
        self.node = node

    def __enter__(self) -> Path:
        import fcntl

        server.stop(self.node["state"])
        srv = Path(server.server_dir(self.node["state"]))
        srv.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fd = os.open(srv / server.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return srv

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def test_without_a_server_pods_run_through_python(cri, node):
    """containerd 1.6's case (no wrapper start, so no prefetch and no server), on every
    line: the front's Python side creates the container, with the same environment."""
    with no_new_server(node) as srv:
        assert not (srv / server.PID_FILE).exists()
        before = served(node)
        assert run(cri, "acme/hello", COLOR) == "hook-ran\nblue yes /run/floxk/env\n"
        assert run(cri, "acme/plain", ["hello"]) == "hello from floxk\n"
        assert served(node) == before
        assert [e["served"] for e in creates(node)[-2:] if "served" in e] == []


def test_latest_moving_between_sandbox_and_container(cri, node):
    """The sandbox's prefetch (through the server) resolves generation 1; latest moves to 2
    before the app container is created: the container gets generation 2."""
    ensure_server(cri, node)
    hub, ref = node["hub"], node["moving"]
    pod = cri.run_pod("moving", {"flox.dev/environment": ref})
    log = node["state"] / "floxk.log"
    deadline = time.monotonic() + 60
    while f"prefetch {ref}: ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"prefetch {ref}: ready" in log.read_text()
    attacker.set_latest(hub.cache, "acme", "moving", 2)
    before = served(node)
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=COLOR)
    cri.start(cid)
    assert cri.wait_exit(cid) == 0
    assert cri.logs(cid, contains="\n") == "two nohook /run/floxk/env\n"
    cri.remove_pod(pod)
    assert served(node) == before + 1
    assert creates(node)[-1]["env"] == ref


def test_concurrent_pods_through_the_server(cri, node):
    ensure_server(cri, node)
    before = served(node)
    cases = [("acme/hello", "hook-ran\nblue yes /run/floxk/env\n"),
             ("acme/plain", "nohook-blue\n")] * 4  # fmt: skip
    results, errors = {}, []

    def one(i, ref):
        try:
            cmd = COLOR if ref == "acme/hello" else ["sh", "-c", 'echo "nohook-${COLOR:-blue}"']
            results[i] = run(cri, ref, cmd, name=f"c{i}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{i}: {e}")

    threads = [threading.Thread(target=one, args=(i, ref)) for i, (ref, _) in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert results == {i: want for i, (_, want) in enumerate(cases)}
    assert served(node) == before + len(cases)


def test_exec_sees_the_environment_in_a_served_container(cri, node):
    ensure_server(cri, node)
    before = served(node)
    pod = cri.run_pod("exec", {"flox.dev/environment": "acme/hello"})
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=["sleep", "60"])
    cri.start(cid)
    assert served(node) == before + 1
    code, out, _ = cri.exec_sync(cid, ["sh", "-c", 'echo "$COLOR $FLOX_ENV"'])
    assert (code, out) == (0, "blue /run/floxk/env\n")
    cri.remove_pod(pod)


def test_a_refusal_through_the_server_reaches_the_pod(cri, node):
    ensure_server(cri, node)
    pod = cri.run_pod("refused", {"flox.dev/environment": "acme/absent"})
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=["hello"])
    with pytest.raises(grpc.RpcError) as e:
        cri.start(cid)
    assert "floxk: " in e.value.details() and "acme/absent" in e.value.details()
    cri.remove_pod(pod)


def test_a_stale_pid_file_is_not_trusted(cri, node):
    """A pid file naming a dead process, or a live one started at another time (a reused
    pid): the fronts go to Python (a front that trusted it would wait forever on a FIFO
    nobody reads), and the next prefetch's server replaces it."""
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        with no_new_server(node) as srv:
            for content in (f"{2**22 + 7} 1\n", f"{sleeper.pid} 1\n"):
                (srv / server.PID_FILE).write_text(content)
                assert server.running(node["state"]) is None
                before = served(node)
                assert run(cri, "acme/hello", COLOR, name="stale") == (
                    "hook-ran\nblue yes /run/floxk/env\n"
                )
                assert served(node) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    if not node["no_wrapper"]:
        ensure_server(cri, node)  # the next prefetch took over
        assert (Path(server.server_dir(node["state"])) / server.PID_FILE).read_text() != (
            f"{sleeper.pid} 1\n"
        )


def test_a_server_directory_of_another_user_is_ignored(cri, node):
    """Someone without root who could make the server directory (owned by them, writable
    by anyone) with a FIFO, a pid file naming their own live process and an answer ready:
    no front uses it, no prefetch serves from it, and pods get their environment."""
    if node["no_wrapper"]:
        pytest.skip("containerd 1.6: no server")
    ensure_server(cri, node)
    server.stop(node["state"])
    srv = Path(server.server_dir(node["state"]))
    shutil.rmtree(srv)
    srv.mkdir(mode=0o777)
    os.chmod(srv, 0o777)
    os.mkfifo(srv / server.REQUESTS, 0o666)
    # The forger's "server": a process of theirs that reads requests and would answer ok.
    fake = subprocess.Popen(
        ["sh", "-c", f'cat "{srv / server.REQUESTS}" >"{srv}/seen"'],
        preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)),
    )
    try:
        (srv / server.PID_FILE).write_text(f"{fake.pid} {server.start_time(fake.pid)}\n")
        os.chown(srv / server.PID_FILE, NOBODY, NOBODY)
        os.chown(srv, NOBODY, NOBODY)
        assert server.start_time(fake.pid) is not None
        before = served(node)
        assert run(cri, "acme/hello", COLOR, name="forged") == "hook-ran\nblue yes /run/floxk/env\n"
        assert served(node) == before
        time.sleep(0.5)
        assert not (srv / "seen").exists() or (srv / "seen").read_text() == ""
        assert "create server not started" in (node["state"] / "floxk.log").read_text()
        assert server.running(node["state"]) == fake.pid  # (the forger's, as the fronts saw it)
    finally:
        fake.kill()
        fake.wait()
        shutil.rmtree(srv)
    ensure_server(cri, node)  # ours again
