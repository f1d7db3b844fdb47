"""The create path's import rule (shim/core/__init__.py, docs/architecture.md), checked.

Every flox container's `runc create` (and its delete) starts Python once. Importing json,
re, pathlib, dataclasses, typing, tomllib or enum costs milliseconds per container on a
loaded node, so the create path of shim/ avoids them (shim.core.fastjson, shim.core.names,
shim.core.records). Nothing but this test notices when one top-level import slips back in:
- a cold create through the real front realizes the environment, then a warm create and
  a delete through the same front run with Python's execv wrapped to record sys.modules
  right before runc takes over;
- every module the create path may import (HOT_MODULES: the warm create's own and those
  of its other branches) is imported alone in a fresh interpreter, so a top-level import
  in a branch the warm create does not take is seen too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shim.front import python_argv, write_front
from testkit.oci import hub_node_toml, make_bundle, publish_test_hub, runc_path

# Modules a warm create must not import (directly or through another module).
FORBIDDEN = ("json", "re", "pathlib", "dataclasses", "typing", "tomllib", "enum")
# The node package's modules on the create/delete path: importing any of them must stay
# clean. A shim module the warm create imports must be listed here (checked below).
HOT_MODULES = (
    "shim",
    "shim.core",
    "shim.runc",
    "shim.core.annotations",
    "shim.core.atomic",
    "shim.core.digest",
    "shim.core.errors",
    "shim.core.fastjson",
    "shim.core.gc",
    "shim.core.hub",
    "shim.core.hubfetch",
    "shim.core.names",
    "shim.core.node",
    "shim.core.pressure",
    "shim.core.realize",
    "shim.core.records",
    "shim.core.service",
    "shim.core.spec",
    "shim.core.stats",
    "shim.core.storeview",
    "shim.core.tree",
)
REPO = Path(__file__).resolve().parents[2]


def _recording_python() -> list[str]:
    """python_argv()'s command, with os.execv wrapped to write sys.modules first to the file
    named by $FLOXK_TEST_MODULES (when set)."""
    argv = python_argv()
    prelude = (
        "import os, sys\n"
        "_execv = os.execv\n"
        "def _rec(path, args):\n"
        "    if os.environ.get('FLOXK_TEST_MODULES'):\n"
        "        with open(os.environ['FLOXK_TEST_MODULES'], 'w') as f:\n"
        "            f.write('\\n'.join(sorted(sys.modules)))\n"
        "    _execv(path, args)\n"
        "os.execv = _rec\n"
    )
    return [*argv[:-1], prelude + argv[-1]]


# Three creates of the same environment in one private mount namespace whose /run is a
# tmpfs (node.toml's parsed cache lives under /run/floxk: nothing reaches the host's):
# the cold one realizes; the second, once node.toml is old enough to be cached, stores the
# parsed config; the third is warm in every respect and is the one recorded.
_SCRIPT = r"""
set -e
mount -t tmpfs floxk-test-run /run
create() {
  b=$1; shift
  FLOXK_TEST_MODULES=$1 "$FRONT" --root "$ROOT" --log "$b/log.json" --log-format json \
    create --bundle "$b" "$(basename "$b")" </dev/null >"$b/out" 2>"$b/err"
  FLOXK_TEST_MODULES=$2 "$FRONT" --root "$ROOT" delete --force "$(basename "$b")" \
    >/dev/null 2>&1 || true
}
create "$B1" "" ""
sleep 2.2
create "$B2" "" ""
create "$B3" "$DUMP" "$DUMP_DELETE"
"""


def _bundle(tmp: Path) -> Path:
    cid = f"app-{uuid.uuid4().hex[:8]}"
    annotations = {
        "flox.dev/environment": "acme/plain",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "app",
    }
    return make_bundle(tmp / cid, ["hello"], annotations=annotations)


@pytest.mark.nix
@pytest.mark.root
def test_warm_create_imports_none_of_the_slow_modules(tmp_path):
    hub = publish_test_hub(tmp_path / "hub")
    # runc as the installer writes it: no PATH search
    cfg = hub_node_toml(tmp_path, hub.url, hub.key, runc=os.path.realpath(runc_path()))
    dump, dump_delete = tmp_path / "modules.txt", tmp_path / "modules-delete.txt"
    front = write_front(
        tmp_path / "bin" / "floxk-runc", os.path.realpath(runc_path()), _recording_python()
    )
    bundles = [_bundle(tmp_path) for _ in range(3)]
    env = {
        **os.environ,
        "FLOXK_NODE_CONFIG": str(cfg),
        "FRONT": str(front),
        "ROOT": str(tmp_path / "runc"),
        "DUMP": str(dump),
        "DUMP_DELETE": str(dump_delete),
        **{f"B{i + 1}": str(b) for i, b in enumerate(bundles)},
    }
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", _SCRIPT],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for b in bundles:
        spec = json.loads((b / "config.json").read_text())
        assert any(m["destination"] == "/nix/store" for m in spec["mounts"]), (
            b / "err"
        ).read_text()
    for what, path in (("a warm create", dump), ("a delete", dump_delete)):
        modules = set(path.read_text().split())
        assert "shim.runc" in modules, f"the recording wrapper did not run {what}"
        slow = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
        assert not slow, (
            f"{what} imported {slow}: keep them off the create path (shim.core.fastjson, "
            "shim.core.names, shim.core.records; lazy imports on cold paths)"
        )
        unlisted = sorted(m for m in modules if m.split(".")[0] == "shim")
        unlisted = [m for m in unlisted if m not in HOT_MODULES]
        assert not unlisted, f"{what} imported {unlisted}: add them to HOT_MODULES"


def _imported_by(module: str) -> set[str]:
    """Top-level packages importing `module` alone loads, in a fresh python3 -I -S."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); before = set(sys.modules)\n"
        f"import {module}\n"
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], check=True, capture_output=True, text=True
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("module", HOT_MODULES)
def test_create_path_module_imports_none_of_the_slow_modules(module):
    slow = sorted(_imported_by(module) & set(FORBIDDEN))
    assert not slow, (
        f"importing {module} loads {slow}: it is on the create path (HOT_MODULES); import "
        "those lazily in the cold function that needs them"
    )


def test_module_import_check_sees_a_slow_import():
    """The check above can fail: a module that imports json at the top is seen."""
    assert "json" in _imported_by("shim.core.containerd")


def test_the_recorder_sees_a_forbidden_import(tmp_path):
    """The check above can fail: a create path that imports json is seen."""
    dump = tmp_path / "modules.txt"
    argv = _recording_python()
    code = argv[-1].replace(
        "from shim.runc import main; main()", "import json; os.execv('/bin/true', ['true'])"
    )
    assert code != argv[-1]
    subprocess.run(
        [*argv[:-1], code], check=True, env={**os.environ, "FLOXK_TEST_MODULES": str(dump)}
    )
    assert "json" in dump.read_text().split()
    assert sys.executable == argv[0]
