"""The node's create server: floxk-runc's Python side without an interpreter start per create.

A flox app container's `runc create` has work only Python does (resolve the reference,
find the tree, rewrite config.json: shim.runc.prepare_create). Starting an interpreter for
it costs ~15 ms of CPU per container, serialized on a loaded node. The sandbox's prefetch
(shim.wrapper.prefetch_main) is an interpreter the pod starts anyway; when it is done and
no server runs on the node, it stays as the server. From then on

- the floxk-runc sh front (shim/front.py) sends each flox app create to the server
  instead of starting Python, and waits for the answer on a pipe of its own: the stdout
  of a waiter subshell, which the worker opens through /proc/<waiter>/fd/9 (no FIFO to
  make: mkfifo would be one more exec per create);
- the server hands each request to a warm worker, a fork of itself (modules already
  imported: no interpreter start, no imports) that answers creates one at a time and is
  kept for the next (a fresh fork pays for copying the pages it touches, ~3 ms; a warm one
  has them); it runs the same shim.runc.act() the Python side runs, with the
  front's own argv and working directory (read from /proc/<front>/), and answers
  `ok` (the front execs its own runc), `fail MESSAGE` (already in runc's log) or
  `fallback` (run the Python side);
- the wrapper shim's front sends a sandbox's prefetch to the server too.

Nothing is prepared ahead of time: every create reads the hub's `latest`, the record and the
tree as the Python side does, so a moving `latest`, a tree removed by GC or a changed
node.toml give the same result either way. The server is only a way of running that code.

Where it lives: state_dir/server/ (mode 0700, owned by the user floxk runs as):
  requests  FIFO (0600): one line per request, `create PID ARGC WAITER` (the front, its
            argument count, its waiter subshell) or `prefetch BUNDLE`
  alive     FIFO (0600), new for each server: only the server and its create workers
            hold it open for writing, so a front's waiter reading it sees EOF once none
            of them is left (a request nobody will answer: the front falls back)
  pid       `PID STARTTIME` of the live server (written once its FIFOs are open)
  reply.PID FIFO (0600) of a front rendered before the waiter's pipe (`create PID ARGC`,
            during an upgrade): the worker opens it, unlinks it, answers, closes it
  lock      flock held by the live server: one per state dir

Trust: only the owner of state_dir/server can write a request or a reply, and both
sides refuse a directory or FIFO that someone else owns or could write; a pod writes
nothing there (it never sees the node's state dir). A request names only a process (whose
argv and cwd are read from /proc) or a sandbox bundle (whose spec is checked as the
prefetch checks it): no path, key or option a pod author chose reaches the server any other
way than through the spec the Python side reads anyway.

Liveness: the fronts check the pid file against /proc/PID/stat's start time before sending
(a dead server or a reused pid means the Python side). The server leaves after IDLE_SECONDS
without requests, when its code changes (an upgrade: the next prefetch starts the new one)
or when its directory goes; it removes its pid file first and still serves what arrives
within DRAIN_SECONDS. A request sent to a server that is killed (SIGKILL) before a worker
took it, or that left right after the front looked, is not lost either: the front's
waiter sees the `alive` FIFO's writers gone and answers `fallback` itself (the Python side
runs it). A worker that had taken it still answers, or fails the create if it dies.

Standard library only (runs on nodes).
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import sys
import time

DIR_NAME = "server"
REQUESTS = "requests"
PID_FILE = "pid"
ALIVE = "alive"
LOCK = "lock"
REPLY_PREFIX = "reply."
IDLE_SECONDS = 300.0
DRAIN_SECONDS = 1.0
REPLY_WAIT_SECONDS = 5.0  # how long a child waits for its front to open the reply FIFO
WAITER_FD = 9  # the front's waiter keeps its stdout (the front's answer pipe) there too
IDLE_WORKERS = 2  # warm create workers kept waiting for the next request
WORKER_REQUESTS = 500  # then a worker leaves and a fresh fork takes its place

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim.core.node import NodeConfig


def server_dir(state_dir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(state_dir), DIR_NAME)


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (the process's start time), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def running(state_dir: str | os.PathLike[str]) -> int | None:
    """The pid of the live server of `state_dir`, as the fronts decide it, else None."""
    try:
        with open(os.path.join(server_dir(state_dir), PID_FILE)) as f:
            pid_text, _, since = f.read().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if start_time(pid) == since else None


def stop(state_dir: str | os.PathLike[str], timeout: float = 10.0) -> bool:
    """SIGTERM the live server of `state_dir` (if any) and wait for it to go; True if one ran."""
    import signal

    pid = running(state_dir)
    if pid is None:
        return False
    since = start_time(pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and start_time(pid) == since:
        time.sleep(0.02)
    return True


def _secure_dir(path: str) -> None:
    """Create `path` (0700) or accept it only when it is ours and nobody else can write it."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a directory only this user can use")


def _fifo(path: str) -> None:
    """A FIFO at `path` owned by us, mode 0600 (anything else there is replaced)."""
    try:
        st = os.lstat(path)
        if stat.S_ISFIFO(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.mkfifo(path, 0o600)


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


def serve_if_none(node: NodeConfig, *, idle: float = IDLE_SECONDS) -> bool:
    """Become the node's create server unless one runs; returns when this one leaves.
    False if another server runs or this one could not start (the reason is in the log)."""
    try:
        return _Server(node, idle).run()
    except OSError as e:
        _note(node, f"create server not started: {e}")
        return False


class _Server:
    def __init__(self, node: NodeConfig, idle: float) -> None:
        self.node, self.idle = node, idle
        self.dir = server_dir(node.state_dir)
        self.children: set[int] = set()
        self.stamp = _code_stamp()
        self.held: list[int] = []  # the lock and the FIFO: not for the children to keep
        self.alive = -1  # the `alive` FIFO's write end: kept by create workers only
        self.spare: list[_Worker] = []  # create workers waiting for a request
        self.busy: dict[int, _Worker] = {}  # by the fd they say `done` on

    def run(self) -> bool:
        os.makedirs(self.node.state_dir, exist_ok=True)
        _secure_dir(self.dir)
        lock = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            return False
        requests = os.path.join(self.dir, REQUESTS)
        _fifo(requests)
        # O_RDWR: never an EOF when no front has it open, and opening never blocks.
        fd = os.open(requests, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.held = [lock, fd]
        self.alive = _fresh_alive(os.path.join(self.dir, ALIVE))
        self._clean_replies()
        _preload()
        from shim.core.atomic import write_atomic

        pid = os.getpid()
        write_atomic(os.path.join(self.dir, PID_FILE), f"{pid} {start_time(pid)}\n".encode(), 0o600)
        _note(self.node, f"create server {pid} serving {self.dir}")
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
        _note(self.node, f"create server {pid} left")
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
            if not (2 <= len(fields) <= 3 and all(f.isdigit() for f in fields)):
                return
            worker = self.spare.pop() if self.spare else self._spawn_worker()
            try:
                os.write(worker.to, f"{rest}\n".encode())
            except OSError:  # it just left: a fresh one takes this request
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
                _note(self.node, f"create server worker: {type(e).__name__}: {e}")
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
        others = [fd for w in [*self.spare, *self.busy.values()] for fd in (w.to, w.done)]
        for fd in [*self.held, *others] if answers else [*self.held, self.alive, *others]:
            os.close(fd)
        try:
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            work()
        except BaseException as e:  # a forked child never returns into the loop
            _note(self.node, f"create server child failed: {type(e).__name__}: {e}")
            code = 1
        finally:
            os._exit(code)

    def _create(self, front: int, argc: int, waiter: int | None = None) -> None:
        if waiter is not None:
            reply = _take_pipe(front, waiter)
        else:  # a front rendered before the waiter's pipe (an upgrade in progress)
            reply = _open_reply(os.path.join(self.dir, f"{REPLY_PREFIX}{front}"))
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
        if argc >= len(argv) or _node_config_of(front_env) != os.environ.get("FLOXK_NODE_CONFIG"):
            return "fallback"  # not what the Python side of that front would read
        os.chdir(cwd)
        args = [os.fsdecode(a) for a in argv[len(argv) - argc :]]
        from shim import runc

        return runc.served_create(args)


class _Worker:
    __slots__ = ("to", "done", "pid")

    def __init__(self, to: int, done: int) -> None:
        self.to, self.done, self.pid = to, done, 0


def _fresh_alive(path: str) -> int:
    """A new `alive` FIFO at `path` (temp + rename: the path never goes missing, and a
    previous server's watchers keep the old one, whose writers are gone), open for writing.
    O_RDWR: opening never blocks; O_CLOEXEC: what a child execs (nix) does not hold it."""
    temp = f"{path}.{os.getpid()}"
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    os.mkfifo(temp, 0o600)
    os.rename(temp, path)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def _node_config_of(environ: list[bytes]) -> str | None:
    for item in environ:
        if item.startswith(b"FLOXK_NODE_CONFIG="):
            return os.fsdecode(item.partition(b"=")[2])
    return None


class _ReplyTimeout(Exception):
    pass


def _take_pipe(front: int, waiter: int) -> int | None:
    """The write end of the pipe front `front` reads its answer from: the stdout of its
    `waiter` (a subshell of it, blocked on the `alive` FIFO), opened through /proc (its copy
    on WAITER_FD: fd 1 is the requests FIFO while it sends the request); then the waiter is
    killed (_quiet_kill), so this worker holds the only write end: the front reads our
    answer, or EOF if we die. None when `waiter` is not such a child of `front`."""
    import signal

    pidfd = -1
    try:
        if hasattr(os, "pidfd_open"):
            pidfd = os.pidfd_open(waiter)  # the kill below reaches this process, no other
        st = os.stat(f"/proc/{waiter}")
        with open(f"/proc/{waiter}/stat", "rb") as f:
            ppid = f.read().rpartition(b")")[2].split()[1]
        if st.st_uid != os.geteuid() or ppid != str(front).encode():
            return None
        fd = os.open(f"/proc/{waiter}/fd/{WAITER_FD}", os.O_WRONLY | os.O_CLOEXEC)
    except (OSError, IndexError):
        if pidfd >= 0:
            os.close(pidfd)
        return None
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        how = _quiet_kill(waiter)
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, how)
        else:
            os.kill(waiter, how)
    except OSError:
        pass  # it is gone already
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return fd


def _quiet_kill(waiter: int) -> int:
    """SIGPIPE, the one death sh does not report on the front's stderr (runc's, which
    containerd logs) -- unless the waiter ignores it (inherited): then SIGKILL."""
    import signal

    try:
        with open(f"/proc/{waiter}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigIgn:"):
                    if int(line.split()[1], 16) & (1 << (signal.SIGPIPE - 1)):
                        return signal.SIGKILL
                    break
    except (OSError, ValueError, IndexError):
        return signal.SIGKILL
    return signal.SIGPIPE


def _reply_timeout(signum, frame) -> None:
    raise _ReplyTimeout()


def _open_reply(path: str) -> int | None:
    """Open the front's reply FIFO for writing (this waits until the front has it open for
    reading: it does so right after sending the request) and unlink it. None when there is
    no such FIFO of ours or its front does not open it within REPLY_WAIT_SECONDS."""
    import signal

    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    previous = signal.signal(signal.SIGALRM, _reply_timeout)
    signal.setitimer(signal.ITIMER_REAL, REPLY_WAIT_SECONDS)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (OSError, _ReplyTimeout):
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    try:
        os.unlink(path)
    except OSError:
        pass
    return fd


def _preload() -> None:
    """Import what a create, a prefetch and a realization use, once, in the server: a
    child that imported them itself would pay that on every request. Then freeze the heap
    for the collector, so children do not copy pages the GC would touch."""
    import gc
    import importlib

    for name in (
        "shim.runc", "shim.wrapper", "shim.core.annotations", "shim.core.atomic",
        "shim.core.gc", "shim.core.hub", "shim.core.records", "shim.core.realize",
        "shim.core.spec", "shim.core.stats", "shim.core.names", "shim.core.service", "shim.core.model",
        "shim.core.nix", "shim.core.proc", "json", "subprocess", "tempfile", "shutil",
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


def _note(node: NodeConfig, msg: str) -> None:
    from shim.wrapper import _note as note

    note(node, msg)


def main() -> None:
    """`python3 -m shim.server`: serve in the foreground (what the prefetch does detached)."""
    from shim.core.node import load_node_config

    sys.exit(0 if serve_if_none(load_node_config()) else 1)


if __name__ == "__main__":
    main()
