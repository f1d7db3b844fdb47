"""containerd-shim-flox-v2's argv as its sh front and the Python wrapper see it: for every
argv, the front execs containerd-shim-runc-v2 with it unchanged, and starts the prefetch
wherever the wrapper would (action `start` in a flox sandbox's bundle), never the other way
round on a spec both can judge.

The front is the real script shim.front renders, run by /bin/sh; what it runs is a stand-in
on each side (runc-v2: prints its argv; the prefetch: leaves a marker). The front runs in a
session of its own, and the test waits until every process of it has gone (the prefetch
runs in the background) before looking for the marker.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shim import front, wrapper
from tests.fuzz import strategies as S
from tests.fuzz.rig import spec, write_bundles, write_stand_in

SPECS = {
    "flox-sandbox": spec("sandbox", "alice/hello"),
    "flox-container": spec("container", "alice/hello"),
    "plain-sandbox": spec("sandbox"),
}
ACTIONS = ["start", "delete", "-info", "Start", "", "-", "--", "x"]
FLAGS = sorted(wrapper.VALUE_FLAGS) + ["debug", "v", "x"]
TOKEN = S.TEXT.filter(lambda t: "\0" not in t)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("shim-argv")
    runc_v2 = write_stand_in(
        root / "stand-in-runc-v2", 'printf runc-v2\nfor a do printf "\\0%s" "$a"; done\n'
    )
    prefetch = write_stand_in(root / "stand-in-prefetch", ': > "$FUZZ_MARKER"\n')
    script = front.write_shim_front(root / "containerd-shim-flox-v2", runc_v2, [prefetch])
    return str(script), write_bundles(root, SPECS), root


def front_prefetches(script: str, argv: list[str], cwd: str, marker: str) -> bool:
    env = {**os.environ, "FUZZ_MARKER": marker}
    p = subprocess.Popen(
        [script, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    out, _ = p.communicate()
    name, *passed = out.split(b"\0")
    assert p.returncode == 0 and name == b"runc-v2", out
    assert passed == [a.encode() for a in argv], (out, argv)  # exec'd unchanged
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the session's last process (a prefetch) gone
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.005)
    found = os.path.exists(marker)
    if found:
        os.unlink(marker)
    return found


def wrapper_prefetches(argv: list[str], cwd: str) -> bool:
    from pathlib import Path

    return wrapper.action_of(argv) == "start" and wrapper.sandbox_env_ref(Path(cwd)) is not None


@st.composite
def shim_argv(draw) -> list[str]:
    out = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(FLAGS))
        dashes = draw(st.sampled_from(["-", "--", "---"]))
        form = draw(st.sampled_from(["bare", "separate", "eq"]))
        value = draw(st.one_of(st.sampled_from(ACTIONS), TOKEN))
        out += {
            "bare": [dashes + name],
            "separate": [dashes + name, value],
            "eq": [f"{dashes}{name}={value}"],
        }[form]
    out.append(draw(st.sampled_from(ACTIONS)))
    return out + draw(st.lists(st.one_of(TOKEN, st.sampled_from(ACTIONS)), max_size=2))


@example(
    argv=[
        "-namespace",
        "k8s.io",
        "-address",
        "/run/c.sock",
        "-publish-binary",
        "/b",
        "-id",
        "x",
        "start",
    ],
    kind="flox-sandbox",
)
@example(
    argv=["---id", "start", "x"], kind="flox-sandbox"
)  # found: the wrapper took "start" as a value
@example(argv=["-", "start"], kind="flox-sandbox")  # a lone "-" is the action, as Go reads it
@settings(max_examples=S.budget(30))
@given(
    argv=st.one_of(shim_argv(), st.lists(st.one_of(TOKEN, st.sampled_from(ACTIONS)), max_size=5)),
    kind=st.sampled_from(sorted(SPECS)),
)
def test_front_prefetches_where_the_wrapper_would(rig, argv, kind):
    script, bundles, root = rig
    marker = str(root / "prefetched")
    assert front_prefetches(script, argv, bundles[kind], marker) == wrapper_prefetches(
        argv, bundles[kind]
    ), argv
