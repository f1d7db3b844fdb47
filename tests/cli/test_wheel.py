"""A wheel built from the checkout carries what `floxk up` and `floxk shim deploy` read.

`pipx install` / `uv tool install` install a wheel, not the checkout: the clusters/ assets
(node image recipe, kind scripts, installer recipe, k3d templates) must be inside it, with
their executable bits. Built with the real pip, installed (no dependencies: those come
from this environment) into a temp dir, and imported from there, not from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _copy_checkout(dest: Path) -> None:
    """The tracked files only, so the build writes nothing into the checkout itself."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for rel in (f.decode() for f in files if f):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def test_wheel_carries_the_cluster_assets_and_floxk_finds_them_there(tmp_path):
    src = tmp_path / "src"
    _copy_checkout(src)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("floxk-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "clusters"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    missing = sorted(set(tracked) - names)
    assert not missing, f"the wheel lacks {missing}"

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    probe = (
        "import json, floxk, floxk._deploy as d, floxk._cluster.nodeimage as n, "
        "floxk._cluster.k3d as k\n"
        "print(json.dumps({'floxk': floxk.__file__, 'installer': str(d.recipe_dir()), "
        "'node': str(n.assets_dir()), 'k3d': str(k.assets_dir())}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    where = json.loads(out)
    assert Path(where["floxk"]).is_relative_to(site), "imported the checkout, not the wheel"
    for key in ("installer", "node", "k3d"):
        d = Path(where[key])
        assert d.is_relative_to(site) and d.is_dir() and any(d.iterdir()), (key, d)
    build = site / "clusters" / "kind" / "build-image.sh"
    assert build.stat().st_mode & stat.S_IXUSR, "kind scripts lost their executable bit"
    version = subprocess.run(
        [sys.executable, "-m", "floxk", "--version"],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert version.startswith("floxk ")
