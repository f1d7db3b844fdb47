"""`floxk shim build`: reproducible, version-stamped zipapps that run on a bare python3."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import zipfile

import pytest

import shim
from floxk._shimbuild import ENTRIES, SHIM_DIR, build_zipapps
from floxk.cli import main

BARE_PYTHON = "/usr/bin/python3"  # Debian's, without floxk's dependencies


def _cli(*args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_build_twice_same_bytes_and_json_matches(tmp_path, capsys):
    assert _cli("shim", "build", "--out", str(tmp_path / "a"), "-o", "json") == 0
    data = json.loads(capsys.readouterr().out)
    assert {a["name"] for a in data["artifacts"]} == set(ENTRIES)
    build_zipapps(tmp_path / "b")
    for a in data["artifacts"]:
        first = (tmp_path / "a" / a["name"]).read_bytes()
        assert first == (tmp_path / "b" / a["name"]).read_bytes()
        assert hashlib.sha256(first).hexdigest() == a["sha256"]
        assert first.startswith(b"#!/usr/bin/env python3\n")
        assert (tmp_path / "a" / a["name"]).stat().st_mode & 0o777 == 0o755


def test_changed_source_changes_bytes_and_stamp(tmp_path):
    src = tmp_path / "shim"
    shutil.copytree(SHIM_DIR, src, ignore=shutil.ignore_patterns("__pycache__"))
    a = build_zipapps(tmp_path / "a", shim_dir=src)
    (src / "core/errors.py").write_text((src / "core/errors.py").read_text() + "\n# changed\n")
    b = build_zipapps(tmp_path / "b", shim_dir=src)
    assert a.source_digest != b.source_digest
    assert [x.sha256 for x in a.artifacts] != [x.sha256 for x in b.artifacts]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_zipapps(tmp_path_factory.mktemp("zipapps"))


@pytest.mark.skipif(not shutil.which(BARE_PYTHON), reason="needs the system python3")
def test_version_stamp_on_bare_python(built):
    for a in built.artifacts:
        out = subprocess.run(
            [BARE_PYTHON, "-I", "-S", str(a.path), "--floxk-version"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert out == f"{a.name} {shim.__version__} {built.source_digest[:16]}\n"


@pytest.mark.skipif(not shutil.which(BARE_PYTHON), reason="needs the system python3")
def test_every_shim_module_imports_from_the_zipapp_with_stdlib_only(built):
    """-I -S: no site-packages, no PYTHONPATH: shim/ must need nothing but the standard library."""
    app = next(a.path for a in built.artifacts if a.name == "floxk-node")
    code = (
        "import sys, zipfile; sys.path.insert(0, sys.argv[1]);"
        "names = [n[:-3].replace('/', '.') for n in zipfile.ZipFile(sys.argv[1]).namelist()"
        " if n.startswith('shim/') and n.endswith('.py')];"
        "[__import__(n) for n in names]; import shim;"
        "assert shim.__file__.startswith(sys.argv[1]), shim.__file__; print(len(names))"
    )
    out = subprocess.run(
        [BARE_PYTHON, "-I", "-S", "-c", code, str(app)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 10


@pytest.mark.skipif(not shutil.which(BARE_PYTHON), reason="needs the system python3")
def test_modules_load_from_the_shipped_bytecode(built):
    """Every shim/x.py has its x.pyc beside it, and zipimport runs that bytecode (its code
    names the path inside the zipapp) instead of compiling the source again."""
    app = next(a.path for a in built.artifacts if a.name == "floxk-runc")
    names = zipfile.ZipFile(app).namelist()
    sources = [n for n in names if n.endswith(".py")]
    assert sources and all(n + "c" in names for n in sources)
    code = (
        "import importlib.util, sys; sys.path.insert(0, sys.argv[1]); import shim.runc;"
        "print(importlib.util.MAGIC_NUMBER.hex(), shim.runc.main.__code__.co_filename)"
    )
    out = subprocess.run(
        [BARE_PYTHON, "-I", "-S", "-c", code, str(app)], capture_output=True, text=True
    )
    magic, filename = out.stdout.split()
    if magic != importlib.util.MAGIC_NUMBER.hex():
        pytest.skip("the system python3 has another bytecode version: it compiles the sources")
    assert filename == "shim/runc.py"


@pytest.mark.skipif(not shutil.which("runc"), reason="needs runc")
def test_floxk_runc_zipapp_passes_through_to_the_real_runc(built):
    app = next(a.path for a in built.artifacts if a.name == "floxk-runc")
    out = subprocess.run(
        [BARE_PYTHON, "-I", "-S", str(app), "--version"], capture_output=True, text=True
    )
    real = subprocess.run(["runc", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == real.stdout and "runc version" in out.stdout


def test_floxk_node_help_lists_its_commands(built):
    app = next(a.path for a in built.artifacts if a.name == "floxk-node")
    out = subprocess.run(
        [BARE_PYTHON, "-I", "-S", str(app), "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for cmd in ("install", "uninstall", "realize", "gc"):
        assert cmd in out.stdout
