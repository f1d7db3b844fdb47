"""The one way the node side runs external programs: list arguments, output kept, shown on
failure (`run`); floxk/_proc.py builds the laptop side's `call` on run_captured.

Every program `run` starts runs as its own process group and dies with its parent: it gets
SIGKILL when the (single-threaded) Python process that started it dies (Linux's
parent-death signal), and when that process stops waiting for it (a timeout, a realization
deadline, Ctrl-C) its whole group is killed before the exception goes on. So a killed
floxk-runc leaves no `nix-store --realise` behind, and neither does a realization past its
deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence

from shim.core.errors import CommandError, MissingDependencyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypedDict, Unpack

    class RunOptions(TypedDict, total=False):
        """What run() passes on to run_captured() (see there)."""

        env: Mapping[str, str] | None
        input: str | None
        cwd: str | os.PathLike[str] | None
        timeout: float | None


def run(argv: Sequence[str], *, hint: str | None = None, **options: Unpack[RunOptions]) -> str:
    """Run argv, return its stdout; raise CommandError with stdout+stderr when it fails.
    `options`: run_captured()'s (env, input, cwd, timeout)."""
    argv = [os.fspath(a) for a in argv]
    path = (options.get("env") or os.environ).get("PATH")
    if shutil.which(argv[0], path=path) is None and "/" not in argv[0]:
        raise MissingDependencyError(
            f"{argv[0]} is not installed",
            hint=f"install {argv[0]} (see README: scripts/install-system.sh)",
        )
    proc = run_captured(argv, **options)
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout + proc.stderr, hint=hint)
    return proc.stdout


def run_captured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """subprocess.run(argv, capture_output=True, text=True) for any exit status, with the
    process tree rules of this module. FileNotFoundError when argv[0] does not exist."""
    argv = [os.fspath(a) for a in argv]
    with subprocess.Popen(
        argv,
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if input is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        text=True,
        process_group=0,
        # preexec_fn makes Python fork (no vfork) and run code in the child: with other
        # threads (the CLI's spinners, grpc's C threads) that can deadlock or abort it, so
        # only in a process with one OS thread (the node side).
        preexec_fn=_die_with(os.getpid()) if _single_threaded() else None,
    ) as p:
        try:
            out, err = p.communicate(input, timeout=timeout)
        except KeyboardInterrupt:  # Ctrl-C reached us, not the child's own group: pass it on
            kill_group(p, signal.SIGINT)
            raise
        except BaseException:
            kill_group(p)
            raise
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def kill_group(p: subprocess.Popen, first: int = signal.SIGKILL, grace: float = 5) -> None:
    """Signal `p`'s process group (p leads it: process_group=0) with `first`, SIGKILL it
    if p is still there after `grace` seconds, and reap p."""
    for sig in dict.fromkeys((first, signal.SIGKILL)):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            p.send_signal(sig)
        try:
            p.wait(timeout=None if sig == signal.SIGKILL else grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


_PR_SET_PDEATHSIG = 1
_prctl = None


def _die_with(parent: int):
    """preexec_fn: SIGKILL this child when `parent` dies (prctl PR_SET_PDEATHSIG). libc is
    loaded here, in the parent: the child between fork and exec only calls it."""
    global _prctl
    if _prctl is None:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(137)

    return arm
