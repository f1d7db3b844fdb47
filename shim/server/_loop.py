"""The create server's process: its loop, its warm create workers, its prefetch children.

What it answers and why: shim.server (the package's docstring). Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import time

from shim.core.pids import start_time
from shim.server import ALIVE, DRAIN_SECONDS, LOCK, PID_FILE, REPLY_PREFIX, REQUESTS, server_dir
from shim.server._fronts import (
    end_waiter,
    fifo,
    fresh_alive,
    node_config_of,
    open_pidfd,
    open_reply,
    secure_dir,
    take_pipe,
)

IDLE_WORKERS = 2  # warm create workers kept waiting for the next request
WORKER_REQUESTS = 500  # then a worker leaves and a fresh fork takes its place

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim.core.node import NodeConfig


def _code_stamp() -> tuple:
    """What the running code was loaded from: a zipapp's stat, or every source file's mtime."""
    import shim

    package = os.path.dirname(os.path.abspath(shim.__file__))
    root = os.path.dirname(package)
    if os.path.isfile(root):  # a zipapp
        st = os.stat(root)
        return (root, st.st_ino, st.st_size, st.st_mtime_ns)
    stamps = []
    for where, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                try:
                    stamps.append((name, os.stat(os.path.join(where, name)).st_mtime_ns))
                except OSError:
                    pass
    return tuple(sorted(stamps))


class Server:
    def __init__(self, node: NodeConfig, idle: float) -> None:
        self.node, self.idle = node, idle
        self.dir = server_dir(node.state_dir)
        self.children: set[int] = set()
        self.stamp = _code_stamp()
        self.held: list[int] = []  # the lock and the FIFO: not for the children to keep
        self.alive = -1  # the `alive` FIFO's write end: kept by create workers only
        self.alive_id = (0, 0)  # its st_dev, st_ino: what a waiter of ours has on fd 4
        self.spare: list[_Worker] = []  # create workers waiting for a request
        self.busy: dict[int, _Worker] = {}  # by the fd they say `done` on

    def run(self) -> bool:
        os.makedirs(self.node.state_dir, exist_ok=True)
        secure_dir(self.dir)
        lock = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            return False
        requests = os.path.join(self.dir, REQUESTS)
        fifo(requests)
        # O_RDWR: never an EOF when no front has it open, and opening never blocks.
        fd = os.open(requests, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.held = [lock, fd]
        self.alive = fresh_alive(os.path.join(self.dir, ALIVE))
        st = os.fstat(self.alive)
        self.alive_id = (st.st_dev, st.st_ino)
        self._clean_replies()
        _preload()
        from shim.core.atomic import write_atomic

        pid = os.getpid()
        write_atomic(os.path.join(self.dir, PID_FILE), f"{pid} {start_time(pid)}\n".encode(), 0o600)
        note(self.node, f"create server {pid} serving {self.dir}")
        import signal

        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "idle", -1.0))
        buffered, last = b"", time.monotonic()
        try:
            while True:
                self._reap()
                ready = self._wait(fd, 1.0)
                if ready is None:
                    continue
                if ready:
                    buffered = self._take(fd, buffered)
                    last = time.monotonic()
                    continue
                if time.monotonic() - last > self.idle or self._should_leave():
                    break
            self._unpublish(pid)
            quiet = time.monotonic()
            while time.monotonic() - quiet < DRAIN_SECONDS:  # a front that just looked
                if self._wait(fd, 0.1):
                    buffered = self._take(fd, buffered)
                    quiet = time.monotonic()
                self._reap()
        finally:
            self._unpublish(pid)
            for worker in [*self.spare, *self.busy.values()]:
                os.close(worker.to)  # it leaves once its request (if any) is answered
            while self.children:
                self._reap(block=True)
            os.close(fd)
            os.close(lock)
            os.close(self.alive)  # the last writer: fronts still waiting fall back
        note(self.node, f"create server {pid} left")
        return True

    def _wait(self, fd: int, timeout: float) -> bool | None:
        """Whether a request is readable on `fd` within `timeout`; None: a busy worker
        said it was done (or died) instead."""
        try:
            ready = select.select([fd, *self.busy], [], [], timeout)[0]
        except InterruptedError:
            return False
        for done in ready:
            if done != fd:
                self._worker_done(done)
        return fd in ready if fd in ready or not ready else None

    def _worker_done(self, done: int) -> None:
        worker = self.busy.pop(done)
        try:
            alive = os.read(done, 64) != b""
        except OSError:
            alive = False
        if not alive:
            # It left: after its last answer, or killed (OOM, an operator) before it. Then
            # a waiter it had not killed yet still holds the front's pipe, blocked on
            # `alive`, which this server holds: end it, so the front reads EOF and fails
            # the create (the worker may have rewritten the spec) instead of waiting for
            # this server to leave. A waiter the worker killed is gone: nothing to do.
            end_waiter(worker.waiter, worker.pidfd, self.alive_id)
        worker.forget_waiter()
        if alive and len(self.spare) < IDLE_WORKERS:
            self.spare.append(worker)
        else:  # it left (its request count, a crash) or there are enough waiting
            os.close(worker.to)
            os.close(worker.done)

    def _take(self, fd: int, buffered: bytes) -> bytes:
        try:
            buffered += os.read(fd, 65536)
        except BlockingIOError:
            return buffered
        *lines, rest = buffered.split(b"\n")
        for line in lines:
            self._dispatch(line.decode(errors="replace"))
        return rest[-4096:]  # a line longer than that is no request of ours

    def _should_leave(self) -> bool:
        try:
            gone = not stat.S_ISDIR(os.lstat(self.dir).st_mode)
        except OSError:
            gone = True
        return gone or self._code_changed()

    def _code_changed(self) -> bool:
        return _code_stamp() != self.stamp

    def _unpublish(self, pid: int) -> None:
        path = os.path.join(self.dir, PID_FILE)
        try:
            with open(path) as f:
                mine = f.read().split(" ")[0] == str(pid)
            if mine:
                os.unlink(path)
        except OSError:
            pass

    def _clean_replies(self) -> None:
        """Reply FIFOs of fronts that are gone (killed before their child unlinked them)."""
        for name in os.listdir(self.dir):
            if name.startswith(REPLY_PREFIX):
                pid = name[len(REPLY_PREFIX) :]
                if not pid.isdigit() or not os.path.exists(f"/proc/{pid}"):
                    try:
                        os.unlink(os.path.join(self.dir, name))
                    except OSError:
                        pass

    def _reap(self, *, block: bool = False) -> None:
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            if block:
                return

    def _dispatch(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "create":
            fields = rest.split(" ")
            if not (2 <= len(fields) <= 3 and all(f.isascii() and f.isdigit() for f in fields)):
                return
            worker = self.spare.pop() if self.spare else self._spawn_worker()
            if len(fields) == 3:  # before the worker can take it: this pid is the waiter's
                worker.waiter, worker.pidfd = int(fields[2]), open_pidfd(int(fields[2]))
            try:
                os.write(worker.to, f"{rest}\n".encode())
            except OSError:  # it just left: a fresh one takes this request
                worker.forget_waiter()
                os.close(worker.to)
                os.close(worker.done)
                self._dispatch(line)
                return
            self.busy[worker.done] = worker
        elif kind == "prefetch" and rest.startswith("/"):
            self._fork(lambda: _prefetch(rest, self.node), answers=False)

    def _spawn_worker(self) -> _Worker:
        """A create worker: a fork of the server that answers creates one at a time, each
        request on its pipe, `done` on the other. Kept for the next ones: a fork's first
        request pays for copying the pages it touches, later ones find them copied."""
        to_read, to_write = os.pipe2(os.O_CLOEXEC)
        done_read, done_write = os.pipe2(os.O_CLOEXEC)
        worker = _Worker(to_write, done_read)
        try:
            worker.pid = self._fork(
                lambda: self._work(to_read, done_write, (to_write, done_read)), answers=True
            )
        finally:
            os.close(to_read)
            os.close(done_write)
        return worker

    def _work(self, requests: int, done: int, server_ends: tuple[int, int]) -> None:
        for fd in server_ends:
            os.close(fd)
        buffered = b""
        for served in range(1, WORKER_REQUESTS + 1):
            while b"\n" not in buffered:
                chunk = os.read(requests, 4096)
                if not chunk:
                    return  # the server closed it (leaving) or died
                buffered += chunk
            line, _, buffered = buffered.partition(b"\n")
            try:
                self._create(*(int(f) for f in line.split(b" ")))
            except Exception as e:  # this front fails (no answer); the worker goes on
                note(self.node, f"create server worker: {type(e).__name__}: {e}")
            os.chdir("/")
            if served == WORKER_REQUESTS:
                return  # leaving: EOF rather than `.`, or the server would send it more
            try:
                os.write(done, b".")
            except OSError:
                return  # the server is gone: so is the reason to wait for more

    def _fork(self, work, *, answers: bool) -> int:
        """Run `work` in a child. `answers`: it answers fronts, so it keeps the `alive`
        FIFO open (their watchers wait for it); a prefetch closes it with the rest."""
        child = os.fork()
        if child:
            self.children.add(child)
            return child
        code = 0
        # A long realization must not keep the next server out, nor keep fronts waiting;
        # nor may a child keep another worker's pipes open (its EOF is how it learns to go).
        workers = [*self.spare, *self.busy.values()]
        others = [fd for w in workers for fd in (w.to, w.done, w.pidfd) if fd >= 0]
        for fd in [*self.held, *others] if answers else [*self.held, self.alive, *others]:
            os.close(fd)
        try:
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            work()
        except BaseException as e:  # a forked child never returns into the loop
            note(self.node, f"create server child failed: {type(e).__name__}: {e}")
            code = 1
        finally:
            os._exit(code)

    def _create(self, front: int, argc: int, waiter: int | None = None) -> None:
        if waiter is not None:
            reply = take_pipe(front, waiter, self.alive_id)
        else:  # a front rendered before the waiter's pipe (an upgrade in progress)
            reply = open_reply(os.path.join(self.dir, f"{REPLY_PREFIX}{front}"))
        if reply is None:
            return  # the front is gone
        with os.fdopen(reply, "w") as out:
            out.write(self._answer(front, argc) + "\n")

    def _answer(self, front: int, argc: int) -> str:
        if self._code_changed():
            import signal

            os.kill(os.getppid(), signal.SIGTERM)  # leave: an upgrade replaced the code
            return "fallback"
        try:
            with open(f"/proc/{front}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
            cwd = os.readlink(f"/proc/{front}/cwd")
            with open(f"/proc/{front}/environ", "rb") as f:
                front_env = f.read().split(b"\0")
        except OSError:
            return "fallback"
        if argc >= len(argv) or node_config_of(front_env) != os.environ.get("FLOXK_NODE_CONFIG"):
            return "fallback"  # not what the Python side of that front would read
        os.chdir(cwd)
        args = [os.fsdecode(a) for a in argv[len(argv) - argc :]]
        from shim import runc

        return runc.served_create(args)


class _Worker:
    """A create worker as the server sees it: the pipes to it, the waiter (pid, pidfd
    opened when its request arrived) of the request it is serving, if any."""

    __slots__ = ("to", "done", "pid", "waiter", "pidfd")

    def __init__(self, to: int, done: int) -> None:
        self.to, self.done, self.pid = to, done, 0
        self.waiter, self.pidfd = 0, -1

    def forget_waiter(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
        self.waiter, self.pidfd = 0, -1


def _preload() -> None:
    """Import what a create, a prefetch and a realization use, once, in the server: a
    child that imported them itself would pay that on every request. Then freeze the heap
    for the collector, so children do not copy pages the GC would touch."""
    import gc
    import importlib

    for name in (
        "shim.runc", "shim.wrapper", "shim.core.annotations", "shim.core.atomic",
        "shim.core.gc", "shim.core.hub", "shim.core.records", "shim.core.realize",
        "shim.core.spec", "shim.core.stats", "shim.core.names", "shim.core.service",
        "shim.core.model", "shim.core.nix", "shim.core.storedb", "shim.core.signatures",
        "shim.core.proc", "json", "subprocess", "tempfile", "shutil",
    ):  # fmt: skip
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a module moved: its first user imports it
    gc.collect()
    gc.freeze()


def _prefetch(bundle: str, node: NodeConfig) -> None:
    """A sandbox's prefetch, as shim.wrapper.prefetch_main does it (niced until needed)."""
    from pathlib import Path

    from shim import wrapper

    os.setpriority(os.PRIO_PROCESS, 0, wrapper.PREFETCH_NICENESS)
    ref = wrapper.sandbox_env_ref(Path(bundle))
    if ref is not None:
        wrapper._prefetch(ref, node, cold_priority=0)


def note(node: NodeConfig, msg: str) -> None:
    """A line in the node log (the wrapper's, where prefetches write theirs)."""
    from shim.wrapper import _note

    _note(node, msg)
