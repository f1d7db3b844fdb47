"""`floxk shim package --format deb`: contents, conffile, and a real dpkg install/remove/purge
into a throwaway root (dpkg --root with --force-script-chrootless, so the maintainer script
runs on this host with $DPKG_ROOT set instead of inside a root that has no /bin/sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from floxk._shimbuild import build_deb
from floxk.cli import main
from shim.core.node import parse_node_config
from shim.installer.render import render_node_front

pytestmark = [
    pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian)"),
    pytest.mark.root,
]
LIB = "/usr/lib/floxk"


def _sh(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, check=True, **kw).stdout


def _dpkg_root(tmp_path):
    """An empty root with its own dpkg database: (root, admin dir, dpkg argv for it)."""
    root = tmp_path / "root"
    admin = root / "var/lib/dpkg"
    for d in ("info", "updates", "triggers"):
        (admin / d).mkdir(parents=True)
    (admin / "status").write_text("")
    dpkg = ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
            "--force-not-root", "--log=/dev/null"]  # fmt: skip
    return root, admin, dpkg


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    with pytest.raises(SystemExit) as e:
        main(["shim", "package", "--format", "deb", "--out", str(out), "-o", "json"])
    assert e.value.code == 0
    return next(out.glob("floxk-shim_*_all.deb"))


def test_contents_conffile_and_no_restart(deb, tmp_path):
    info = _sh("dpkg-deb", "--info", str(deb))
    assert "Package: floxk-shim" in info and "Depends: python3 (>= 3.11)" in info
    assert "preinst" not in info
    members = _sh("dpkg-deb", "--contents", str(deb))
    for path in ("containerd-shim-flox-v2", "floxk-runc", "floxk-node", "floxk-runc-front"):
        assert f".{LIB}/{path}" in members
    assert "/etc/containerd" not in members  # no containerd config is shipped or touched
    ctl = tmp_path / "ctl"
    _sh("dpkg-deb", "--control", str(deb), str(ctl))
    assert (ctl / "conffiles").read_text() == "/etc/floxk/node.toml\n"
    # A first install runs nothing; an upgrade of an installed node renders the fronts again
    # (install --as-before) and restarts nothing.
    postinst = (ctl / "postinst").read_text()
    assert '[ "$1" = configure ] && [ -n "$2" ]' in postinst and "--restart" not in postinst
    assert "install --as-before" in postinst and "--restart" not in (ctl / "prerm").read_text()
    x = tmp_path / "x"
    _sh("dpkg-deb", "-x", str(deb), str(x))
    assert (x / f"{LIB.lstrip('/')}/floxk-runc-front").read_text() == render_node_front(
        LIB, "/usr/bin/python3"
    )
    node = parse_node_config((x / "etc/floxk/node.toml").read_text())
    assert node.hubs == [] and str(node.state_dir) == "/var/lib/floxk"
    assert os.readlink(x / "usr/sbin/floxk-node") == "../lib/floxk/floxk-node"


def test_reproducible(deb, tmp_path):
    again = build_deb(tmp_path)
    assert again.path.read_bytes() == deb.read_bytes()


def test_dpkg_install_remove_purge_in_a_throwaway_root(deb, tmp_path):
    root, admin, dpkg = _dpkg_root(tmp_path)
    _sh(*dpkg, "-i", str(deb))
    assert "ii  floxk-shim" in _sh("dpkg-query", f"--admindir={admin}", "-l", "floxk-shim")
    app = root / LIB.lstrip("/") / "floxk-node"
    out = _sh("/usr/bin/python3", "-I", "-S", str(app), "--floxk-version")
    assert out.startswith("floxk-node ")
    # What `floxk-node install` leaves next to the package's files; removal must take it too.
    os.symlink("/usr/sbin/runc", root / LIB.lstrip("/") / "real-runc")
    (root / LIB.lstrip("/") / "containerd-shim-flox-v2-front").write_text("#!/bin/sh\n")
    (root / LIB.lstrip("/") / ".floxk-install.json").write_text(json.dumps({"created": []}))

    _sh(*dpkg, "-r", "floxk-shim")
    assert not (root / LIB.lstrip("/")).exists()
    assert (root / "etc/floxk/node.toml").exists()  # a conffile outlives remove
    _sh(*dpkg, "-P", "floxk-shim")
    assert not (root / "etc/floxk").exists()
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if "var/lib/dpkg" not in str(p))
    assert all(p in ("etc", "usr", "usr/lib", "usr/sbin", "var", "var/lib") for p in left), left


def test_dpkg_upgrade_keeps_what_install_added(deb, tmp_path):
    """`dpkg -i` of a newer package (prerm `upgrade`, no postinst): the new files replace the
    old ones at the same paths, and what `floxk-node install` added (the link to runc, the
    shim's front, the record) stays, so running pods keep their fronts."""
    from tests.cri.test_node_upgrade import NEW_VERSION, _new_build

    newer = build_deb(tmp_path / "new", shim_dir=_new_build(tmp_path))
    assert newer.version == NEW_VERSION and newer.path.name == f"floxk-shim_{NEW_VERSION}_all.deb"
    root, admin, dpkg = _dpkg_root(tmp_path)
    _sh(*dpkg, "-i", str(deb))
    lib = root / LIB.lstrip("/")
    os.symlink("/usr/sbin/runc", lib / "real-runc")
    (lib / "containerd-shim-flox-v2-front").write_text("#!/bin/sh\n")
    (lib / ".floxk-install.json").write_text(json.dumps({"created": []}))
    node_toml = root / "etc/floxk/node.toml"
    node_toml.write_text(node_toml.read_text() + 'hubs = ["file:///srv/hub"]\n')  # the operator's
    before = {p.name: os.stat(p).st_ino for p in lib.iterdir()}

    out = _sh(*dpkg, "-i", str(newer.path))
    assert "Unpacking floxk-shim" in out and "over (0.1.0)" in out, out
    assert f"ii  floxk-shim     {NEW_VERSION}" in _sh(
        "dpkg-query", f"--admindir={admin}", "-l", "floxk-shim"
    )
    version = _sh("/usr/bin/python3", "-I", "-S", str(lib / "floxk-runc"), "--floxk-version")
    assert version.split()[1] == NEW_VERSION
    after = {p.name: os.stat(p).st_ino for p in lib.iterdir()}
    assert set(after) == set(before)  # the same paths, nothing gone
    assert after["floxk-runc"] != before["floxk-runc"]  # replaced (a new inode: renamed over)
    for name in ("real-runc", "containerd-shim-flox-v2-front", ".floxk-install.json"):
        assert after[name] == before[name], f"{name} touched by the upgrade"
    assert 'hubs = ["file:///srv/hub"]' in node_toml.read_text()  # a conffile: edits kept
