"""The create path's import rule, checked on a real warm create.

Every flox container's `runc create` starts Python once. Importing json, re, pathlib,
dataclasses, typing, tomllib (or what they pull in: enum, functools' friends) costs
milliseconds per container on a loaded node, so the create path of shim/ avoids them
(shim.core.fastjson, shim.core.names, shim.core.records). Nothing but this test notices when one top-level
import slips back in: a cold create through the real front realizes the environment, then a
warm create through the same front runs with Python's execv wrapped to record sys.modules
right before runc takes over.
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
from testkit.oci import make_bundle, publish_test_hub, runc_path, write_node_toml

pytestmark = [pytest.mark.nix, pytest.mark.root]

# Modules a warm create must not import (directly or through another module).
FORBIDDEN = ("json", "re", "pathlib", "dataclasses", "typing", "tomllib", "enum")


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
  "$FRONT" --root "$ROOT" --log "$b/log.json" --log-format json create --bundle "$b" "$(basename "$b")" \
    </dev/null >"$b/out" 2>"$b/err"
  "$FRONT" --root "$ROOT" delete --force "$(basename "$b")" >/dev/null 2>&1 || true
}
create "$B1"
sleep 2.2
create "$B2"
FLOXK_TEST_MODULES=$DUMP create "$B3"
"""


def _bundle(tmp: Path) -> Path:
    cid = f"app-{uuid.uuid4().hex[:8]}"
    annotations = {
        "flox.dev/environment": "acme/plain",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "app",
    }
    return make_bundle(tmp / cid, ["hello"], annotations=annotations)


def test_warm_create_imports_none_of_the_slow_modules(tmp_path):
    hub = publish_test_hub(tmp_path / "hub")
    cfg = write_node_toml(
        tmp_path / "node.toml",
        hubs=[hub.url],
        trusted_public_keys=[hub.key],
        state_dir=str(tmp_path / "state"),
        store_root=str(tmp_path / "store"),
        runc=os.path.realpath(runc_path()),  # as the installer writes it: no PATH search
    )
    dump = tmp_path / "modules.txt"
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
    modules = set(dump.read_text().split())
    assert "shim.runc" in modules, "the recording wrapper did not run the create path"
    slow = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert not slow, (
        f"a warm create imported {slow}: keep them off the create path "
        "(shim.core.fastjson, shim.core.names, shim.core.records; lazy imports on cold paths)"
    )


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
