"""The one way floxk runs external programs: list arguments, output kept, shown on failure
(`run`), or handed over line by line for steps that take minutes (`stream`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence

from shim.errors import CommandError, MissingDependencyError


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    hint: str | None = None,
) -> str:
    """Run argv, return its stdout; raise CommandError with stdout+stderr when it fails."""
    argv = [os.fspath(a) for a in argv]
    if shutil.which(argv[0], path=(env or os.environ).get("PATH")) is None and "/" not in argv[0]:
        raise MissingDependencyError(
            f"{argv[0]} is not installed",
            hint=f"install {argv[0]} (see README: scripts/install-system.sh)",
        )
    proc = subprocess.run(
        argv,
        env=dict(env) if env is not None else None,
        input=input,
        cwd=cwd,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout + proc.stderr, hint=hint)
    return proc.stdout


def stream(
    argv: Sequence[str],
    say: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    keep: int = 30,
) -> tuple[int, list[str]]:
    """Run argv, handing each line of its stdout+stderr to `say` as it comes (run() would
    keep a step that takes minutes silent until the end); returns (exit code, last lines)."""
    argv = [os.fspath(a) for a in argv]
    tail: list[str] = []
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        cwd=cwd,
        env=dict(env) if env is not None else None,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            say(line)
            tail = (tail + [line])[-keep:]
    return proc.returncode, tail
