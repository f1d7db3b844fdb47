"""The create server's protocol without containerd: real fronts, a real server process.

runc is /bin/true (front and node.toml), so a create's outcome is what floxk wrote into
config.json and the node log. The server runs from a copy of shim/ in the test's temp dir,
so the test can change "its code" the way an upgrade does.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from shim import server
from shim.front import python_argv, write_front
from shim.server import _fronts, _loop
from testkit.oci import make_bundle, publish_test_hub, write_node_toml
from testkit.wait import eventually

pytestmark = [pytest.mark.nix, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    hub = publish_test_hub(tmp / "hub")
    state = tmp / "state"
    cfg = write_node_toml(
        tmp / "node.toml", hubs=[hub.url], trusted_public_keys=[hub.key],
        state_dir=str(state), store_root=str(tmp / "store"), runc="/bin/true",
    )  # fmt: skip
    code = tmp / "code"
    shutil.copytree(REPO / "shim", code / "shim", ignore=shutil.ignore_patterns("__pycache__"))
    # Workers leave after 2 creates here, so every test also crosses a worker's turnover.
    source = code / "shim" / "server" / "_loop.py"
    text = source.read_text()
    assert f"WORKER_REQUESTS = {_loop.WORKER_REQUESTS}" in text
    source.write_text(
        text.replace(f"WORKER_REQUESTS = {_loop.WORKER_REQUESTS}", "WORKER_REQUESTS = 2")
    )
    front = write_front(
        tmp / "bin" / "floxk-runc", "/bin/true", python_argv(path=code),
        server.server_dir(state),
    )  # fmt: skip
    env = {**os.environ, "FLOXK_NODE_CONFIG": str(cfg)}
    n = {"tmp": tmp, "state": state, "front": front, "env": env, "code": code}
    assert create(n, "acme/plain")[0] == 0  # cold, through Python: the tree exists after
    yield n
    server.stop(state)


def create(node, ref, *, name="app", restore_signals=True):
    cid = f"{name}-{uuid.uuid4().hex[:8]}"
    annotations = {
        "flox.dev/environment": ref,
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": name,
    }
    bundle = make_bundle(node["tmp"] / cid, ["hello"], annotations=annotations)
    log = bundle / "runc.log"
    r = subprocess.run(
        [str(node["front"]), "--log", str(log), "--log-format", "json", "create", "--bundle",
         str(bundle), cid],
        env=node["env"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        restore_signals=restore_signals,
    )  # fmt: skip
    spec = json.loads((bundle / "config.json").read_text())
    return r.returncode, r.stderr, spec, log


def served(node) -> int:
    log = node["state"] / "floxk.log"
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return sum(1 for e in lines if e.get("event") == "create" and e.get("served"))


@pytest.fixture
def running(node):
    proc = subprocess.Popen(
        python_argv(entry="shim.server:main", path=node["code"]), env=node["env"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while server.running(node["state"]) != proc.pid:
        assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
        time.sleep(0.05)
    yield proc
    server.stop(node["state"])
    proc.wait(timeout=15)


def _env(spec) -> dict:
    return dict(item.split("=", 1) for item in spec["process"]["env"])


def test_a_served_create_rewrites_the_spec_as_the_python_side_does(node, running):
    before = served(node)
    code, err, spec, _ = create(node, "acme/hello")
    assert code == 0, err
    assert err == ""  # nothing of the hand-off reaches runc's stderr (containerd's log)
    assert served(node) == before + 1
    env = _env(spec)
    assert env["COLOR"] == "blue" and env["FLOX_ENV"] == "/run/floxk/env"
    assert env["PATH"].startswith("/run/floxk/env/bin:")
    assert {m["destination"] for m in spec["mounts"]} >= {"/nix/store", "/run/floxk/env"}
    assert spec["process"]["args"][:2] == ["/run/floxk/env/bin/sh", "-c"]  # the hook
    assert not list(Path(server.server_dir(node["state"])).glob("reply.*"))


def test_creates_go_on_across_workers_leaving(node, running):
    """A worker leaves after WORKER_REQUESTS creates (2 in this copy): the server must
    never hand a request to one that is leaving (its front would wait forever). Bursts
    of creates at once, so requests arrive while workers leave."""
    before = served(node)
    for _ in range(3):
        fronts = [_start_front(node, "acme/hello", wait=False) for _ in range(6)]
        for front, _, bundle in fronts:
            _, err = front.communicate(timeout=30)
            assert front.returncode == 0, err
            assert _env(json.loads((bundle / "config.json").read_text()))["COLOR"] == "blue"
    assert served(node) == before + 18
    assert running.poll() is None


def test_a_front_that_ignores_sigpipe_is_still_answered(node, running):
    """The worker ends the front's waiter with SIGPIPE (sh reports no such death); a
    front started with SIGPIPE ignored (as Python leaves it without restore_signals)
    gets SIGKILL instead: the create must still be answered, not wait."""
    before = served(node)
    code, err, spec, _ = create(node, "acme/hello", restore_signals=False)
    assert code == 0, err
    assert served(node) == before + 1 and _env(spec)["COLOR"] == "blue"


def test_the_warm_worker_serves_again_after_a_quiet_second(node, running):
    """The second create goes to the worker the first one left waiting, after the
    server's once-a-second housekeeping ran in between."""
    before = served(node)
    assert create(node, "acme/hello")[0] == 0
    time.sleep(1.5)
    code, err, spec, _ = create(node, "acme/hello")
    assert code == 0, err
    assert served(node) == before + 2 and _env(spec)["COLOR"] == "blue"
    assert running.poll() is None


def test_a_refusal_is_logged_for_runc_and_printed(node, running):
    code, err, spec, log = create(node, "acme/absent")
    assert code == 1
    assert "floxk: " in err and "acme/absent" in err
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["level"] == "error" and "acme/absent" in last["msg"]
    assert "/run/floxk/env" not in json.dumps(spec)  # config.json untouched


def test_changed_code_falls_back_to_python_and_the_server_leaves(node, running):
    target = node["code"] / "shim" / "runc.py"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "an upgrade"
    before = served(node)
    code, err, spec, _ = create(node, "acme/plain")
    assert code == 0, err
    assert served(node) == before  # the Python side created it
    assert _env(spec)["FLOX_ENV"] == "/run/floxk/env"
    assert running.wait(timeout=15) == 0  # it left as it should, not by an error
    assert server.running(node["state"]) is None


def _start_front(node, ref="acme/plain", *, wait=True):
    cid = f"app-{uuid.uuid4().hex[:8]}"
    annotations = {
        "flox.dev/environment": ref,
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "app",
    }
    bundle = make_bundle(node["tmp"] / cid, ["hello"], annotations=annotations)
    front = subprocess.Popen(
        [str(node["front"]), "create", "--bundle", str(bundle), cid], env=node["env"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # The front's waiter: the subshell whose stdout the answer comes on.
    children = Path(f"/proc/{front.pid}/task/{front.pid}/children")
    deadline = time.monotonic() + 10
    waiter = None
    alive = os.path.join(server.server_dir(node["state"]), server.ALIVE)
    while wait and waiter is None and time.monotonic() < deadline:
        for child in children.read_text().split() if children.exists() else []:
            try:  # not the grep before it: the one reading the `alive` FIFO on fd 4
                if os.readlink(f"/proc/{child}/fd/4") == alive:
                    waiter = int(child)
            except OSError:
                pass
        time.sleep(0.02)
    assert waiter is not None or not wait
    return front, waiter, bundle


def test_a_killed_child_fails_the_create_without_python_running_on_it(node, running):
    """A served create whose child dies without answering: the front fails it (exit 1,
    a message), since the spec may already be rewritten."""
    import signal

    # The server is paused, so the request waits in its FIFO; the test then plays a child
    # that dies without answering: it holds the server's `alive` FIFO as a worker does
    # (inherited from the server), takes the front's pipe from its waiter as a worker
    # does (opens /proc/<waiter>/fd/1, kills the waiter), then closes both.
    os.kill(running.pid, signal.SIGSTOP)
    alive = os.open(Path(server.server_dir(node["state"])) / server.ALIVE, os.O_RDWR)
    front, waiter, _ = _start_front(node)
    time.sleep(0.2)  # the waiter has sent its request
    os.kill(running.pid, signal.SIGKILL)
    running.wait(timeout=10)
    st = os.fstat(alive)
    fd = _fronts.take_pipe(front.pid, waiter, (st.st_dev, st.st_ino))
    assert fd is not None
    os.close(fd)
    os.close(alive)
    _, err = front.communicate(timeout=30)
    assert front.returncode == 1
    assert "ended without an answer" in err


def test_a_server_killed_with_a_request_queued_falls_back_to_python(node, running):
    """kill -9 of the server while a create waits in its FIFO: the create does not hang,
    the Python side runs it (the spec was untouched: no child took the request)."""
    import signal

    assert create(node, "acme/plain")[0] == 0  # served: a warm worker now waits for more
    os.kill(running.pid, signal.SIGSTOP)  # the request stays queued
    before = served(node)
    front, waiter, bundle = _start_front(node, "acme/hello")
    time.sleep(0.3)
    assert front.poll() is None  # waiting for the (stopped) server
    os.kill(running.pid, signal.SIGKILL)
    running.wait(timeout=10)
    _, err = front.communicate(timeout=30)
    assert front.returncode == 0, err
    spec = json.loads((bundle / "config.json").read_text())
    assert _env(spec)["COLOR"] == "blue" and _env(spec)["FLOX_ENV"] == "/run/floxk/env"
    assert served(node) == before  # the Python side created it
    assert not Path(f"/proc/{waiter}").exists()  # the waiter answered and left


def test_a_server_killed_while_its_child_works_still_answers(node, running):
    """kill -9 of the server after it forked the child: the child answers (ok), the
    watcher does not also answer, and the spec is rewritten once."""
    import signal

    before = served(node)
    # A slow hub record read would be needed to kill the server mid-child reliably; a
    # burst of creates with the server killed right after the first is taken does it.
    fronts = [_start_front(node, "acme/hello", wait=False) for _ in range(3)]
    time.sleep(0.01)
    os.kill(running.pid, signal.SIGKILL)
    running.wait(timeout=10)
    for front, _, bundle in fronts:
        _, err = front.communicate(timeout=30)
        assert front.returncode == 0, err
        spec = json.loads((bundle / "config.json").read_text())
        assert _env(spec)["FLOX_ENV"] == "/run/floxk/env"
        # Rewritten once: one /run/floxk/env mount, the hook not wrapped twice.
        assert [m["destination"] for m in spec["mounts"]].count("/run/floxk/env") == 1
        assert spec["process"]["args"].count("/run/floxk/env/bin/sh") == 1
    assert served(node) >= before  # some were served, the rest fell back


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


def _queued(pid: int) -> int:
    """Bytes waiting in the pipes `pid` reads from (a worker: its request pipe), read with
    FIONREAD on a copy opened through /proc: a request handed to it and not yet read."""
    import fcntl
    import struct
    import termios

    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            if int(info.partition("flags:")[2].split()[0], 8) & os.O_ACCMODE != os.O_RDONLY:
                continue
            copy = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            buf = fcntl.ioctl(copy, termios.FIONREAD, b"\0" * 4)
            total += struct.unpack("i", buf)[0]
        finally:
            os.close(copy)
    return total


soon = functools.partial(eventually, timeout=15, interval=0.02)  # a process's next step


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "Z"  # dead, its new parent not reaping yet


def test_a_worker_killed_holding_a_request_fails_that_create_at_once(node, running):
    """A worker SIGKILLed (the OOM killer, an operator) after the server handed it a
    request and before it killed the request's waiter: the waiter still holds the front's
    pipe and waits on `alive`, which the server holds. The server must end that waiter, so
    the front fails loudly now (not when the server leaves, hours later), and go on serving.

    Deterministic: the server's one warm worker is stopped (SIGSTOP), the request is seen
    queued in its pipe (FIONREAD from outside), then it is killed: the state the window
    leaves (its copy of the pipe, if it had opened one, closes as it dies either way)."""
    import signal

    assert create(node, "acme/plain")[0] == 0  # served: one warm worker now waits
    assert soon(lambda: len(_children(running.pid)) == 1)
    (worker,) = _children(running.pid)
    os.kill(worker, signal.SIGSTOP)
    try:
        front, waiter, bundle = _start_front(node, "acme/hello")
        assert soon(lambda: _queued(worker) > 0), "the request never reached the worker"
    finally:
        os.kill(worker, signal.SIGKILL)
    try:
        _, err = front.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        front.kill()
        front.communicate()
        pytest.fail("the front still waits: its waiter was left holding the pipe")
    assert front.returncode == 1
    assert "ended without an answer" in err
    assert _gone(waiter)
    assert "/run/floxk/env" not in (bundle / "config.json").read_text()  # nobody ran on it
    assert running.poll() is None and server.running(node["state"]) == running.pid
    before = served(node)
    code, err, spec, _ = create(node, "acme/hello")  # the same server, a fresh worker
    assert code == 0, err
    assert served(node) == before + 1 and _env(spec)["COLOR"] == "blue"


def test_a_killed_fronts_waiter_is_ended_when_its_request_is_taken(node, running):
    """A front killed while its request waits (kubelet giving up on a slow create)
    leaves its waiter reparented, blocked on `alive`: the worker that takes the request
    must kill it, or one process stays per killed create until the server leaves."""
    import signal

    os.kill(running.pid, signal.SIGSTOP)  # the request stays queued in the FIFO
    try:
        front, waiter, bundle = _start_front(node, "acme/hello")
        requests = Path(server.server_dir(node["state"])) / server.REQUESTS
        fifo = os.open(requests, os.O_RDWR | os.O_NONBLOCK)
        try:
            import fcntl
            import struct
            import termios

            def sent():
                return struct.unpack("i", fcntl.ioctl(fifo, termios.FIONREAD, b"\0" * 4))[0]

            assert soon(lambda: sent() > 0), "the waiter sent no request"
        finally:
            os.close(fifo)
        front.kill()
        front.communicate(timeout=10)
        assert not _gone(waiter)  # orphaned, still waiting on `alive`
    finally:
        os.kill(running.pid, signal.SIGCONT)
    assert soon(lambda: _gone(waiter)), "the killed front's waiter was left sleeping"
    assert "/run/floxk/env" not in (bundle / "config.json").read_text()  # not served
    assert running.poll() is None
    assert create(node, "acme/hello")[0] == 0


def test_a_request_naming_another_process_of_ours_never_touches_it(node, running):
    """The requests FIFO is only the server's owner's; still, a request naming a process
    that is not a waiter of ours must not make the server open its pipe or kill it. The
    impostors: a `sleep` child of this test (its parent is the request's `front`) with a
    pipe on fd 9 and the `alive` FIFO on fd 4 read-write; another named with a front that
    is not its parent; the server itself and its worker."""
    alive = os.path.join(server.server_dir(node["state"]), server.ALIVE)
    impostor = subprocess.Popen(
        ["sh", "-c", 'exec 9>&1 4<>"$1"; exec sleep 600', "sh", alive],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    )  # fmt: skip
    plain = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert soon(lambda: os.readlink(f"/proc/{impostor.pid}/exe").endswith("sleep"))
        assert create(node, "acme/plain")[0] == 0  # a warm worker exists
        (worker,) = _children(running.pid)
        requests = Path(server.server_dir(node["state"])) / server.REQUESTS
        lines = [
            f"create {os.getpid()} 1 {impostor.pid}",  # its real parent as the front
            f"create 1 1 {impostor.pid}",  # a front that is gone, by the look of it
            f"create {os.getpid()} 1 {plain.pid}",
            f"create 1 1 {plain.pid}",
            f"create {os.getppid()} 1 {running.pid}",
            f"create {running.pid} 1 {worker}",
            f"create 1 1 {10**30}",  # no such pid (the server opens a pidfd of it)
            "create 1 1 \u00b2",  # a digit to str.isdigit(), not to int()
        ]
        with open(requests, "w", encoding="utf-8") as f:
            f.write("".join(f"{line}\n" for line in lines))
        before = served(node)
        for _ in range(3):  # each request after them, while they are taken
            code, err, _, _ = create(node, "acme/hello")
            assert code == 0, err
        time.sleep(1.0)  # a worker still busy with one of them ends it within that
        assert impostor.poll() is None and plain.poll() is None
        assert running.poll() is None and server.running(node["state"]) == running.pid
        assert served(node) == before + 3  # served, not fallen back: the server is sound
        # Nothing wrote to their pipes either (fd 9 and fd 1 are the same pipe).
        for proc in (impostor, plain):
            os.set_blocking(proc.stdout.fileno(), False)
            assert proc.stdout.read() in (None, b"")
    finally:
        for proc in (impostor, plain):
            proc.kill()
            proc.wait()
