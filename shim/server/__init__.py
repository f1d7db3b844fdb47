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

A worker that dies with a request (SIGKILL by the OOM killer or an operator) before it
killed the request's waiter, whether or not it had opened the waiter's pipe yet: the
waiter would hold the front's pipe open, blocked on `alive` (the server still holds it),
and the create would wait for the server to leave, hours on a busy node. The server reads
the waiter's pid from the request and opens a pidfd of it before handing the request on;
when a worker's `done` pipe ends without its `.`, it kills that waiter (if still one of
ours, see below), so the front reads EOF and fails the create with "ended without an
answer" (never the Python side: the worker may have rewritten config.json already). The
server and its other workers go on; the next create is answered as before.

A front killed while its request waits (containerd or kubelet giving up on a slow
create, an operator) leaves its waiter reparented, blocked on `alive`: one process per
killed create until the server leaves. The worker that takes that request finds the
waiter's parent is not the front any more and kills it (no answer: nobody reads it).

Which process a request may make the server open or kill: a waiter of ours only, proved
through /proc/PID against a pidfd opened first (and checked still unreaped after the
reads, so a reused pid is never taken for it): our uid, fd 4 our current `alive` FIFO
(same inode) open read-only (the server and its workers hold it read-write), fd 9 a pipe;
the pipe is opened only from a child of the request's front. Anything else named in a
request is left alone: a request names a pid, never which signal goes where. Without
pidfds (Python < 3.9, Linux < 5.3) neither kill above is made; a waiter then stays until
the server leaves, as before.

The package: this module is its face (where a server lives, whether one runs, stopping
it, serving); shim.server._loop the server process and its workers; shim.server._fronts
the FIFOs and pipes it shares with the fronts, and who may use them.

Standard library only (runs on nodes).
"""

from __future__ import annotations

import os
import sys
import time

from shim.core.pids import start_time

DIR_NAME = "server"
REQUESTS = "requests"
PID_FILE = "pid"
ALIVE = "alive"
LOCK = "lock"
REPLY_PREFIX = "reply."
IDLE_SECONDS = 300.0
DRAIN_SECONDS = 1.0

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim.core.node import NodeConfig


def server_dir(state_dir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(state_dir), DIR_NAME)


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


def serve_if_none(node: NodeConfig, *, idle: float = IDLE_SECONDS) -> bool:
    """Become the node's create server unless one runs; returns when this one leaves.
    False if another server runs or this one could not start (the reason is in the log)."""
    from shim.server._loop import Server, note

    try:
        return Server(node, idle).run()
    except OSError as e:
        note(node, f"create server not started: {e}")
        return False


def main() -> None:
    """`shim.server:main`: serve in the foreground (what the prefetch does detached)."""
    from shim.core.node import load_node_config

    sys.exit(0 if serve_if_none(load_node_config()) else 1)
