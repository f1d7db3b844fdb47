"""runc argv as the sh front and floxk-runc's Python side see it: both must pick the same route
(the real runc at once, or floxk's Python) for every argv: flags of both levels as -x, --x,
-x=v, --x=v, value flags with and without values, `--`, `-`, unknown subcommands, bundles
given every way.

The front is the real script shim.front renders, run by /bin/sh. What it execs is a stand-in
on each side (a script printing its name and argv: the real runc and Python's side are not
the subject here). Python's route is shim.runc.main() itself, run in this process with its
two exits (exec the real runc; the create/exec/delete work) replaced by recorders.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shim import front, runc
from shim.core import node
from tests.fuzz import strategies as S
from tests.fuzz.rig import ENV, TYPE, spec, write_bundles, write_stand_in

# Decisive bundles: both sides can tell at once whether the create is floxk's.
SPECS = {
    "flox": spec("container", "alice/hello"),
    "sandbox": spec("sandbox", "alice/hello"),
    "plain": spec("container"),
}
# In doubt for the front (it sends these to Python, which decides from the parsed spec).
DOUBTFUL = {
    "mention": spec("container", **{"flox.dev/skip-containers": "app"}),
    "broken": '{"annotations": {"flox.dev/environment": ',
    "missing": None,
}
STAND_IN = 'printf %s {name}\nfor a do printf "\\0%s" "$a"; done\n'


class Routed(BaseException):  # not an Exception: main() turns those into runc log lines
    pass


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """(front script, {bundle kind: absolute dir}) in a temp dir."""
    root = tmp_path_factory.mktemp("runc-argv")
    programs = {
        name: write_stand_in(root / f"stand-in-{name}", STAND_IN.format(name=name))
        for name in ("runc", "python")
    }
    script = front.write_front(root / "floxk-runc", programs["runc"], [programs["python"]])
    return str(script), write_bundles(root, {**SPECS, **DOUBTFUL})


def front_route(script: str, argv: list[str], cwd: str) -> str:
    out = subprocess.run([script, *argv], cwd=cwd, capture_output=True, check=True).stdout
    name, *passed = out.split(b"\0")
    # exec'd with the argv it got, byte for byte
    assert passed == [a.encode() for a in argv], (passed, argv)
    return name.decode()


def python_route(argv: list[str], cwd: str) -> str:
    def to(route):
        def record(*args, **kwargs):
            raise Routed(route)

        return record

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(runc, "_exec_runc", to("runc"))
        for work in ("prepare_create", "prepare_exec", "release"):
            mp.setattr(runc, work, to("python"))
        mp.setattr(node, "load_node_config", lambda *a, **k: node.NodeConfig())
        try:
            runc.main(list(argv))
        except Routed as r:
            return r.args[0]
    raise AssertionError("main() returned")


# --- argv strategies -------------------------------------------------------------------------

SUBCOMMANDS = [*runc.ACTED_ON, "start", "state", "kill", "ps", "events", "pause", "resume",
               "update", "checkpoint", "restore", "list", "features", "Create", "create2",
               "-", "--", ""]  # fmt: skip
GLOBAL_FLAGS = sorted(runc.GLOBAL_VALUE_FLAGS) + ["debug", "systemd-cgroup", "b", "bundle", "x"]
SUB_FLAGS = sorted(runc.SUB_VALUE_FLAGS) + ["detach", "d", "no-pivot", "force", "tty", "x"]


@st.composite
def flag(draw, names: list[str], bundles: list[str]) -> list[str]:
    name = draw(st.sampled_from(names))
    dashes = draw(st.sampled_from(["-", "--", "---"]))
    value = draw(st.one_of(st.sampled_from(bundles), S.TEXT.filter(lambda t: "\0" not in t)))
    form = draw(st.sampled_from(["bare", "separate", "eq"]))
    if form == "eq":
        return [f"{dashes}{name}={value}"]
    if form == "separate":
        return [f"{dashes}{name}", value]
    return [f"{dashes}{name}"]


TOKEN = S.TEXT.filter(lambda t: "\0" not in t)


def argvs(bundles: list[str]) -> st.SearchStrategy[list[str]]:
    """runc-shaped argv (globals, subcommand, its flags, an id, more), or any tokens."""
    shaped = st.tuples(
        st.lists(flag(GLOBAL_FLAGS, bundles), max_size=3),
        st.sampled_from(SUBCOMMANDS),
        st.lists(flag(SUB_FLAGS, bundles), max_size=4),
        st.lists(st.one_of(TOKEN, st.sampled_from(bundles)), max_size=2),
    ).map(
        lambda t: (
            [a for group in t[0] for a in group] + [t[1]] + [a for g in t[2] for a in g] + t[3]
        )
    )
    anything = st.lists(
        st.one_of(
            TOKEN,
            st.sampled_from(SUBCOMMANDS),
            flag(GLOBAL_FLAGS + SUB_FLAGS, bundles).map(" ".join),
        ),
        max_size=6,
    )
    return st.one_of(shaped, anything)


def bundle_values(bundles: dict[str, str], kinds) -> list[str]:
    out = []
    for kind in kinds:
        out += [bundles[kind], bundles[kind] + "/", f"../{kind}"]
    return out


@example(argv=["create", "--bundle", "{flox}", "id"], cwd="plain")
@example(argv=["create", "-", "--bundle", "{flox}", "id"], cwd="plain")  # found: "-"
@example(argv=["-", "create", "--bundle", "{flox}", "id"], cwd="plain")  # found: "-"
@example(argv=["create", "---bundle", "{flox}", "id"], cwd="plain")  # found: "---bundle"
@example(argv=["---log", "create", "--bundle", "{flox}", "id"], cwd="plain")
@example(argv=["-criu", "-criu", "---criu", "create"], cwd="flox")  # found by Hypothesis
@given(argv=st.data(), cwd=st.sampled_from(sorted(SPECS)))
def test_front_and_python_agree_on_the_route(rig, argv, cwd):
    """Wherever Python judges from a spec both can read (or from the subcommand alone),
    the front takes the same route; elsewhere it may only send more to Python."""
    script, bundles = rig
    values = bundle_values(bundles, SPECS)
    if isinstance(argv, list):  # an @example: bundle names to fill in
        argv = [a.format(**bundles) for a in argv]
    else:
        argv = argv.draw(argvs(values))
    cwd = bundles[cwd]
    route = python_route(argv, cwd)
    if python_judges(argv, cwd, [bundles[k] for k in SPECS]):
        assert front_route(script, argv, cwd) == route, argv
    elif front_route(script, argv, cwd) == "runc":  # a bundle without a spec: in doubt
        assert route == "runc", argv


def python_judges(argv: list[str], cwd: str, decisive: list[str]) -> bool:
    """Whether Python decides this argv from a decisive spec (or from the subcommand)."""
    call = runc.parse_argv(argv)
    if call.subcommand not in front.CREATES:
        return True
    bundle = call.flags.get("bundle", call.flags.get("b"))
    bundle = bundle if isinstance(bundle, str) and bundle else "."
    return os.path.realpath(os.path.join(cwd, bundle)) in decisive


@settings(max_examples=S.budget(40))
@given(argv=st.data(), cwd=st.sampled_from(sorted({**SPECS, **DOUBTFUL})))
def test_front_never_passes_on_what_python_would_act_on(rig, argv, cwd):
    """With specs the front cannot judge (no config.json, broken JSON, flox.dev without an
    environment), it may send more to Python than Python acts on, never less."""
    script, bundles = rig
    argv = argv.draw(argvs(bundle_values(bundles, {**SPECS, **DOUBTFUL})))
    cwd = bundles[cwd]
    if front_route(script, argv, cwd) == "runc":
        assert python_route(argv, cwd) == "runc", argv


KEYS = st.one_of(
    st.sampled_from([ENV, TYPE, "flox.dev/skip-containers", "flox.dev/" + TYPE, "x"]),
    S.TEXT.map(lambda t: "flox.dev/" + t),
)
VALUES = st.one_of(
    st.sampled_from(["sandbox", "container", "alice/hello", f'"{TYPE}": "sandbox"']), S.TEXT
)


@settings(max_examples=S.budget(40))
@given(
    annotations=st.dictionaries(KEYS, VALUES, max_size=4),
    layout=st.sampled_from(
        [{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False}]
    ),
)
def test_front_reads_annotations_as_python_does(tmp_path_factory, rig, annotations, layout):
    """A create's route from annotations a pod author shapes (flox.dev/* keys pass CRI's
    pod_annotations filter): the front's two greps may send more to Python, never less."""
    script, _ = rig
    d = tmp_path_factory.mktemp("spec")
    (d / "config.json").write_text(json.dumps({"annotations": annotations}, **layout))
    argv = ["create", "--bundle", str(d), "id"]
    if front_route(script, argv, os.fspath(d)) == "runc":
        assert python_route(argv, os.fspath(d)) == "runc", annotations


def test_stand_ins_report_their_argv(rig):
    script, bundles = rig
    argv = ["--root", "/run/runc", "create", "--bundle", bundles["flox"], "a b", "", "é"]
    assert front_route(script, argv, bundles["plain"]) == "python"
    assert front_route(script, ["state", "x"], bundles["plain"]) == "runc"
    assert python_route(argv, bundles["plain"]) == "python"
    assert Path(script).read_text().startswith("#!/bin/sh\n")
