"""Upgrading the node side with flox pods running, through CRI: `floxk shim install` of a new
build over the old one (what `floxk shim install` and `floxk-node install` do on a node),
then containerd restarted, as a package upgrade's systemd restart would.

containerd pins a task's shim binary path when the task starts and, on its next start, drops
the task (and leaks its shim) when that path no longer resolves (containerd#14145; #10811 is
the same report): the upgrade must keep the fronts' paths. The new build here is the same
source stamped with another version (shim.__version__), which each create's node-log event
names, so "new pods use the new version" is read off the node log.
"""

from __future__ import annotations

import json
import shutil

import pytest

from floxk._shimbuild import SHIM_DIR, build_zipapps
from shim.installer.install import install
from shim.installer.layout import FRONT_NAME, SHIM_FRONT_NAME
from tests.cri.conftest import assert_released
from tests.cri.test_install import daemon, flox_node  # noqa: F401 - fixtures
from tests.cri.test_node_lifecycle import _installed, _last_tick, _restart, _runc, _ticking_pod

pytestmark = [pytest.mark.cri, pytest.mark.root, pytest.mark.nix]

NEW_VERSION = "0.1.0+upgrade-test"


def _creates(flox_node) -> dict[str, str]:  # noqa: F811
    """container id -> the floxk version that created it (the node log's create events)."""
    log = flox_node["node_toml"].parent / "state" / "floxk.log"
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return {e["container"]: e.get("floxk") for e in events if e["event"] == "create"}


def _new_build(tmp_path):
    """The shim sources with another version: a new build with the same behaviour."""
    src = tmp_path / "src" / "shim"
    shutil.copytree(SHIM_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "__init__.py"
    text = init.read_text()
    assert '__version__ = "' in text
    init.write_text(text.replace(text.split('__version__ = "')[1].split('"')[0], NEW_VERSION, 1))
    return src


def test_shim_upgrade_with_pods_running(daemon, flox_node, cri_images, tmp_path):  # noqa: F811
    kw = _installed(daemon, flox_node, cri_images)
    cri = daemon.cri
    old_pod, old = _ticking_pod(cri)
    old_version = _creates(flox_node)[old]
    assert old_version and old_version != NEW_VERSION
    shims = daemon.shim_pids()
    fronts = {name: (flox_node["bin"] / name).read_text() for name in (FRONT_NAME, SHIM_FRONT_NAME)}

    # The new build replaces the zipapps in place; install again renders the fronts at the
    # same paths (containerd's pinned shim path and runc-v2's BinaryName stay valid).
    build_zipapps(flox_node["bin"], shim_dir=_new_build(tmp_path))
    again = install(**kw, runc=_runc())
    assert again.verified
    for name, before in fronts.items():
        assert (flox_node["bin"] / name).read_text() == before, f"{name} moved or changed"

    # The running pod is untouched: same shim, still ticking, exec and logs work.
    assert set(shims) <= set(daemon.shim_pids())
    tick = _last_tick(cri, old)
    assert f"tick {tick + 2}" in cri.logs(old, contains=f"tick {tick + 2}", timeout=30)
    assert cri.exec_sync(old, ["hello"])[:2] == (0, "hello from floxk\n")
    # A new pod is created by the new build.
    new_pod, new = _ticking_pod(cri)
    assert _creates(flox_node)[new] == NEW_VERSION

    # containerd restarted after the upgrade (what a package's postinst does): both pods
    # keep running and can be exec'd and stopped.
    _restart(daemon)
    cri = daemon.cri
    for cid in (old, new):
        assert cri.status(cid).state == 1  # CONTAINER_RUNNING
        assert cri.exec_sync(cid, ["hello"])[:2] == (0, "hello from floxk\n")
    for cid in (old, new):
        cri.stop(cid, grace=2)
        assert cri.status(cid).state == 2  # CONTAINER_EXITED
    cri.remove_pod(old_pod)
    cri.remove_pod(new_pod)
    assert_released(cri, flox_node["node_toml"].parent / "state")
