"""Every real Flox environment in tests/env/flox-envs loads, as Flox wrote it.

The fixtures are byte-exact copies from public repositories (each dir's SOURCE says which).
Expected values are computed from the JSON itself, never written down here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shim.core.errors import LockError
from shim.core.model import STORE_PATH_RE, load_lock, load_manifest

CORPUS = Path(__file__).parent / "flox-envs"
ENVS = sorted(p for p in CORPUS.iterdir() if (p / "manifest.lock").exists())


def test_the_corpus_is_there():
    assert len(ENVS) >= 20
    assert {json.loads((e / "manifest.lock").read_text())["lockfile-version"] for e in ENVS} == {
        0,
        1,
    }


def locked_count(raw: dict) -> int:
    """Package entries as the file has them: a list in v1, {system: {id: ...}} in v0."""
    packages = raw["packages"]
    if raw["lockfile-version"] == 0:
        return sum(len(entries) for entries in packages.values())
    return len(packages)


@pytest.mark.parametrize("env", ENVS, ids=[e.name for e in ENVS])
def test_corpus_env_loads(env: Path):
    raw = json.loads((env / "manifest.lock").read_text())
    manifest = load_manifest(env / "manifest.toml")
    lock = load_lock(env / "manifest.lock")

    assert lock.lockfile_version == raw["lockfile-version"]
    assert len(lock.packages) == locked_count(raw)
    # Every locked package belongs to a descriptor of the manifest the lock embeds.
    assert {p.install_id for p in lock.packages} <= set(lock.manifest.install)
    assert manifest.version in (0, 1) or manifest.version.startswith("1.")
    assert lock.digest() == load_lock(env / "manifest.lock").digest()

    if lock.lockfile_version == 0:
        with pytest.raises(LockError, match="lockfile-version 0"):
            lock.packages_for(lock.systems()[0])
        return
    for system in lock.systems():
        for package in lock.packages_for(system):
            paths = package.install_paths()
            assert paths, f"{package.install_id} on {system} installs nothing"
            assert set(paths) <= set(package.outputs.values())
            assert all(STORE_PATH_RE.match(p) for p in paths)


@pytest.mark.parametrize("env", ENVS, ids=[e.name for e in ENVS])
def test_corpus_warnings_name_what_floxk_does_not_honour(env: Path):
    manifest = load_manifest(env / "manifest.toml")
    for key in ("services", "include", "build"):
        warned = any(f"'{key}'" in w for w in manifest.warnings)
        assert warned == bool(manifest.raw.get(key)), key
