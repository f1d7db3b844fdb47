"""containerd-shim-flox-v2: a thin wrapper over containerd-shim-runc-v2.

It execs runc-v2 with the same argv, stdin, stdout and stderr (os.execv: byte for
byte by construction; containerd >= 2.3 speaks protobuf there). Before that, and only
for `start` of a pod sandbox carrying flox.dev/environment, it forks a detached
prefetch that resolves and realizes the environment while the sandbox comes up, so
the app containers' `runc create` (shim.runc) finds it ready. The prefetch never
blocks or fails the sandbox: its stdio goes to the node log and any error ends there.

Installed nodes run the /bin/sh front of shim/front.py instead of main(): it execs runc-v2
without starting Python, and runs prefetch_main() in the background for flox sandboxes
only. main() stays a complete wrapper for layouts that point containerd at the zipapp.

The rewrite of container specs does not happen here: containerd 2.x runs `start` once
per pod, and 1.6's CRI never execs this wrapper. See docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

from shim.core import annotations as ann
from shim.core.node import NodeConfig, load_node_config

# Niceness of the sh front's prefetch while it checks whether there is anything to do.
PREFETCH_NICENESS = 19

# containerd's shim flags taking a value (Go's flag package: -x v, --x v, -x=v).
VALUE_FLAGS = {"namespace", "address", "publish-binary", "id", "bundle", "socket", "debug-address"}


def action_of(argv: list[str]) -> str | None:
    """The shim action (start, delete, ...): the first argument that is not a flag or its value."""
    it = iter(argv)
    for tok in it:
        if tok.startswith("-") and tok != "-":  # a lone "-" is an argument, as for Go's flag
            # One or two dashes, as Go's flag package reads them: "---x" names no flag of
            # containerd's, so its neighbour is never taken as a value.
            name, eq, _ = (tok[2:] if tok.startswith("--") else tok[1:]).partition("=")
            if not eq and name in VALUE_FLAGS:
                next(it, None)
            continue
        return tok
    return None


def sandbox_env_ref(bundle: Path) -> ann.EnvRef | None:
    """The environment a sandbox's spec asks for, or None (not a sandbox, no annotation)."""
    try:
        spec = json.loads((bundle / "config.json").read_bytes())
    except (OSError, ValueError):
        return None
    annotations = spec.get("annotations") or {}
    if annotations.get(ann.CRI_CONTAINER_TYPE) != "sandbox" or ann.ENVIRONMENT not in annotations:
        return None
    return ann.parse_annotations(annotations).environment


def main(argv: list[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    node: NodeConfig | None = None
    try:
        node = load_node_config()
        if action_of(args) == "start":
            ref = sandbox_env_ref(Path.cwd())
            if ref is not None:
                spawn_prefetch(ref, node)
    except Exception as e:  # the sandbox starts whatever prefetch thinks
        _note(node, f"prefetch not started: {type(e).__name__}: {e}")
    try:
        target = (node or NodeConfig()).find_runc_v2_shim()
    except Exception as e:
        sys.stderr.write(f"containerd-shim-flox-v2: {e}\n")
        sys.exit(1)
    os.execv(target, [target, *args])


def prefetch_main(serve: bool = False) -> NoReturn:
    """The sh front's background prefetch; cwd is the sandbox's bundle (see shim/front.py).
    `serve`: then stay as the node's create server if none runs (prefetch_and_serve_main).

    Leaves containerd's session and closes what it inherited first, so nothing of it holds
    a pipe of containerd's or delays the sandbox; every outcome goes to the node log.
    """
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader
    # Lowest priority until the environment turns out to need realizing: on a warm node
    # this process only finds the tree ready, and it must not take CPU from the creates of
    # the pod's containers, which run at the same time (the front starts it under `nice`).
    os.setpriority(os.PRIO_PROCESS, 0, PREFETCH_NICENESS)
    node: NodeConfig | None = None
    try:
        node = load_node_config()
        _detach_stdio(node)
        ref = sandbox_env_ref(Path.cwd())
        if ref is not None:
            _prefetch(ref, node, cold_priority=0)
    except Exception as e:
        _note(node, f"prefetch not started: {type(e).__name__}: {e}")
    if serve and node is not None:
        _stay_as_server(node)
    os._exit(0)


def prefetch_and_serve_main() -> NoReturn:
    """prefetch_main(), then the node's create server unless one runs (shim.server)."""
    prefetch_main(serve=True)


def _stay_as_server(node: NodeConfig) -> None:
    """Serve the node's flox creates from this interpreter when no create server runs
    (shim.server): the next pods' containers then start no Python of their own."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # creates wait for it: not niced
    except OSError:
        return  # not allowed to (not root): a niced server would slow creates down
    try:
        os.chdir("/")  # the sandbox's bundle goes away with the pod
        from shim.server import serve_if_none

        serve_if_none(node)
    except Exception as e:
        _note(node, f"create server failed: {type(e).__name__}: {e}")


def spawn_prefetch(ref: ann.EnvRef, node: NodeConfig) -> None:
    """Double fork: the grandchild realizes `ref` in its own session, stdio on the node log.

    The parent waits only for the first child, which exits at once, so nothing of the
    prefetch holds containerd's pipes or delays `start`.
    """
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        _detach_stdio(node)
        _prefetch(ref, node)
    except BaseException:  # a forked child must never return into main()
        traceback.print_exc()
    finally:
        os._exit(0)


def _detach_stdio(node: NodeConfig) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    try:
        os.makedirs(os.path.dirname(node.log_path), exist_ok=True)
        log = os.open(node.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    except OSError:
        log = devnull
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, 1024)


def _prefetch(ref: ann.EnvRef, node: NodeConfig, *, cold_priority: int | None = None) -> None:
    """Realize `ref` unless its tree is there; cold_priority: the niceness to realize with
    (the containers' creates wait for this realization: it must not lag behind them)."""
    from shim.core.realize import ready
    from shim.core.service import fetch_for, realize_deadline, realize_record

    start = time.monotonic()
    _note(node, f"prefetch {ref}: started")
    try:
        with realize_deadline(ref, node) as limit:
            found = fetch_for(ref, node)
            limit.digest(found.digest)
            env = ready(node.state_dir, found.digest)
            if env is None:
                if cold_priority is not None:
                    try:
                        os.setpriority(os.PRIO_PROCESS, 0, cold_priority)
                    except OSError:
                        pass  # not root: realize niced rather than not at all
                env = realize_record(found, node)
            from shim.core.storeview import store_mounts

            store_mounts(node, env)  # builds the store view: the create finds it ready too
    except Exception as e:  # create will report it to the pod
        from shim.core.errors import AccessError

        if isinstance(e, AccessError):  # a private hub: asked at create with the pod's token
            _note(node, f"prefetch {ref}: left to the containers' create: {e}")
        else:
            _note(node, f"prefetch {ref}: failed: {e}")
        return
    _note(node, f"prefetch {ref}: ready {env.digest} in {time.monotonic() - start:.1f}s")


def _note(node: NodeConfig | None, msg: str) -> None:
    """One line to the node log (stderr of the prefetch child is that log already)."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} containerd-shim-flox-v2: {msg}\n"
    try:
        path = (node or NodeConfig()).log_path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            f.write(line)
    except OSError:
        pass


if __name__ == "__main__":
    main()
