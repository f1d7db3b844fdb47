"""How floxk and its e2e suite run programs (kind, k3d, kubectl, nix, helm, apt, pytest):
one helper, `call`, in the spirit of pip's `call_subprocess`.

- argument lists, never a shell string;
- `check` (default): a failure raises CommandError carrying the program's output, so the
  CLI shows stderr only when it matters; check=False hands back the exit code instead;
- `say`: steps that take minutes (building the kind base image, the e2e suite) hand each
  output line over as it comes, instead of staying silent until the end;
- `timeout`: the program is killed and CommandTimeout (exit 5) raised;
- a program that is not installed is a MissingDependencyError with the install hint.

Captured calls go through the node's process rules (shim.core.proc.run_captured: own process
group, killed with its caller). Streamed calls stay in floxk's process group, so Ctrl-C
reaches the program itself (pytest then tears its cluster down). Why this is not built on
the `sh` package: docs/architecture.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from floxk._exit import ExitStatus
from shim.core.errors import CommandError, FloxkError, MissingDependencyError
from shim.core.proc import run_captured

Say = Callable[[str], None]


class CommandTimeout(FloxkError):
    """A program did not finish in the time it was given."""

    exit_code = ExitStatus.TIMEOUT


def call(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    say: Say | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    hint: str | None = None,
    keep: int = 30,
) -> subprocess.CompletedProcess[str]:
    """Run argv to its end. Captured (default): stdout and stderr kept apart. With `say`:
    stdout+stderr line by line to `say`, and only the last `keep` lines kept (as stdout)."""
    args = [os.fspath(a) for a in argv]
    if "/" not in args[0] and shutil.which(args[0], path=(env or os.environ).get("PATH")) is None:
        raise MissingDependencyError(
            f"{args[0]} is not installed",
            hint=f"install {args[0]} (see README: scripts/install-system.sh)",
        )
    try:
        if say is None:
            proc = run_captured(args, env=env, input=input, cwd=cwd, timeout=timeout)
        else:
            proc = _streamed(args, say, env=env, cwd=cwd, timeout=timeout, keep=keep)
    except subprocess.TimeoutExpired as e:
        raise CommandTimeout(
            f"{' '.join(args)} did not finish in {timeout:g} s (killed)",
            hint=hint or "raise the timeout, or look at what the program waits for",
        ) from e
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stdout + proc.stderr, hint=hint)
    return proc


def _streamed(
    args: list[str],
    say: Say,
    *,
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    timeout: float | None,
    keep: int,
) -> subprocess.CompletedProcess[str]:
    tail: list[str] = []
    with subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        cwd=cwd,
        env=dict(env) if env is not None else None,
    ) as proc:
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire) if timeout is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                say(line)
                tail = (tail + [line])[-keep:]
        finally:
            if timer is not None:
                timer.cancel()
    if expired.is_set():
        raise subprocess.TimeoutExpired(args, timeout or 0)
    return subprocess.CompletedProcess(
        args, proc.returncode, "\n".join(tail) + ("\n" if tail else ""), ""
    )
