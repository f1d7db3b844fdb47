"""floxk._proc.call, the laptop side's one way to run a program, against real programs."""

from __future__ import annotations

import sys
import time

import pytest

from floxk._proc import CommandTimeout, call
from shim.core.errors import CommandError, MissingDependencyError


def test_captured_call_keeps_stdout_and_stderr_apart():
    proc = call(["sh", "-c", "echo out; echo err >&2"])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "out\n", "err\n")


def test_failure_raises_with_its_stderr_and_hint():
    with pytest.raises(CommandError) as e:
        call(["sh", "-c", "echo why it failed >&2; exit 3"], hint="do this instead")
    assert e.value.returncode == 3 and "why it failed" in e.value.message
    assert e.value.hint == "do this instead" and e.value.exit_code == 1


def test_unchecked_call_returns_the_exit_code():
    proc = call(["sh", "-c", "echo no >&2; exit 4"], check=False)
    assert proc.returncode == 4 and proc.stderr == "no\n"


def test_input_env_and_cwd_reach_the_program(tmp_path):
    proc = call(["sh", "-c", "cat; echo $GREETING; pwd"], input="in\n",
                env={"PATH": "/usr/bin:/bin", "GREETING": "hi"}, cwd=tmp_path)  # fmt: skip
    assert proc.stdout.splitlines() == ["in", "hi", str(tmp_path.resolve())]


def test_missing_program_is_a_missing_dependency():
    with pytest.raises(MissingDependencyError) as e:
        call(["floxk-no-such-program", "x"], check=False)
    assert e.value.exit_code == 4 and "install floxk-no-such-program" in e.value.hint


@pytest.mark.parametrize("streamed", [False, True])
def test_timeout_kills_the_program_and_says_so(streamed):
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as e:
        call(["sh", "-c", "echo started; exec sleep 30"], timeout=1,
             say=said.append if streamed else None)  # fmt: skip
    assert time.monotonic() - t0 < 10
    assert e.value.exit_code == 5 and "did not finish in 1 s" in e.value.message
    assert said == (["started"] if streamed else [])


def test_streamed_call_hands_over_each_line_as_it_comes_and_keeps_the_tail():
    seen: list[tuple[str, float]] = []
    script = "for i in 1 2 3 4; do echo line $i; echo err $i >&2; sleep 0.2; done"
    proc = call(["sh", "-c", script], say=lambda s: seen.append((s, time.monotonic())), keep=3)
    lines = [s for s, _ in seen]
    assert lines == [f"{w} {i}" for i in range(1, 5) for w in ("line", "err")]
    assert seen[-1][1] - seen[0][1] > 0.4, "lines arrived only at the end"
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["err 3", "line 4", "err 4"]


def test_streamed_failure_raises_with_the_tail():
    with pytest.raises(CommandError) as e:
        call(
            [sys.executable, "-c", "print('last words'); raise SystemExit(2)"], say=lambda _s: None
        )
    assert e.value.returncode == 2 and "last words" in e.value.message
