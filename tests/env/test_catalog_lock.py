"""`floxk env lock` against the busybox test catalog, with real Nix builds."""

from __future__ import annotations

import json
import subprocess

import pytest

from floxk._lock import lock_environment
from floxk.cli import main
from shim.core.errors import LockError, NixError
from shim.core.lockfile import load_lock
from shim.core.model import current_system

pytestmark = pytest.mark.nix

HELLO = 'version = 1\n[install]\nhello.pkg-path = "hello"\n'


def write_env(tmp_path, text, name="env"):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "manifest.toml").write_text(text)
    return directory


def test_lock_resolves_builds_and_round_trips(tmp_path, catalog_flake):
    directory = write_env(
        tmp_path, HELLO + 'greeting.pkg-path = "greeting"\ngreeting.priority = 6\n'
    )
    result = lock_environment(directory, catalog=f"path:{catalog_flake}")

    lock = load_lock(directory / "manifest.lock")
    assert lock.digest() == result.lock.digest()
    raw = json.loads((directory / "manifest.lock").read_text())
    assert raw["lockfile-version"] == 1
    assert raw["manifest"]["install"]["greeting"]["priority"] == 6
    by_id = {p["install_id"]: p for p in raw["packages"]}
    hello = by_id["hello"]
    assert hello["system"] == current_system()
    assert hello["attr_path"] == "hello" and hello["pname"] == "hello"
    assert hello["version"] == "1.0" and hello["group"] == "toplevel"
    assert hello["locked_url"].startswith("path:") and "narHash=" in hello["locked_url"]
    assert hello["derivation"].endswith("-hello-1.0.drv")
    assert by_id["greeting"]["priority"] == 6

    # Built: the locked output exists and runs (its interpreter is the store's busybox).
    out = hello["outputs"]["out"]
    assert out in result.built
    run = subprocess.run([f"{out}/bin/hello"], capture_output=True, text=True, check=True)
    assert run.stdout == "hello from floxk\n"

    # Deterministic: locking again gives the same lock, byte for byte.
    before = (directory / "manifest.lock").read_text()
    lock_environment(directory, catalog=f"path:{catalog_flake}")
    assert (directory / "manifest.lock").read_text() == before


def test_lock_other_systems_are_evaluated_not_built(tmp_path, catalog_flake):
    other = "aarch64-linux" if current_system() != "aarch64-linux" else "x86_64-linux"
    directory = write_env(tmp_path, HELLO)
    result = lock_environment(
        directory, catalog=f"path:{catalog_flake}", systems=[current_system(), other]
    )
    assert sorted(p.system for p in result.lock.packages) == sorted([current_system(), other])
    assert result.lock.packages_for(other)[0].outputs["out"] not in result.built
    assert any(other in w for w in result.warnings)


def test_each_flake_is_evaluated_once_for_every_package_and_system(
    tmp_path, catalog_flake, monkeypatch
):
    """Catalog and flake packages of one flake, for two systems: one `nix eval` (a catalog
    like nixpkgs is parsed once), the same lock entries as separate evaluations gave."""
    from shim.core import nix

    other = "aarch64-linux" if current_system() != "aarch64-linux" else "x86_64-linux"
    catalog = f"path:{catalog_flake}"
    text = HELLO + f'web.pkg-path = "web"\nhi.flake = "{catalog}#greeting"\n'
    evaluations = []
    real = nix.run_nix

    def counting(argv, **kw):
        if "eval" in argv:
            evaluations.append(argv)
        return real(argv, **kw)

    monkeypatch.setattr(nix, "run_nix", counting)
    result = lock_environment(
        write_env(tmp_path, text), catalog=catalog, systems=[current_system(), other]
    )
    assert len(evaluations) == 1
    got = {(p.install_id, p.system): p.raw.get("attr_path") for p in result.lock.packages}
    assert got == {
        (i, s): path
        for s in (current_system(), other)
        for i, path in (("hello", "hello"), ("web", "web"), ("hi", None))
    }
    hi = result.lock.packages_for(current_system())
    (hi,) = [p for p in hi if p.install_id == "hi"]
    assert hi.raw["locked-flake-attr-path"] == f"packages.{current_system()}.greeting"


def test_flake_and_store_path_descriptors(tmp_path, catalog_flake):
    catalog = lock_environment(write_env(tmp_path, HELLO, "c"), catalog=f"path:{catalog_flake}")
    hello_out = catalog.lock.packages[0].outputs["out"]
    text = (
        "version = 1\n[install]\n"
        f'hi.flake = "path:{catalog_flake}#hello"\n'
        f'pinned.store-path = "{hello_out}"\n'
        "pinned.priority = 7\n"
    )
    result = lock_environment(write_env(tmp_path, text, "f"))
    by_id = {p.install_id: p for p in result.lock.packages}
    assert by_id["hi"].install_paths() == [hello_out]
    assert by_id["hi"].raw["locked-flake-attr-path"] == f"packages.{current_system()}.hello"
    assert by_id["pinned"].install_paths() == [hello_out]
    assert by_id["pinned"].raw == {
        "install_id": "pinned",
        "store_path": hello_out,
        "system": current_system(),
        "priority": 7,
    }


def test_unknown_package_names_the_install_id(tmp_path, catalog_flake):
    directory = write_env(tmp_path, 'version = 1\n[install]\nnope.pkg-path = "no-such-pkg"\n')
    with pytest.raises(LockError, match="nope.*no-such-pkg"):
        lock_environment(directory, catalog=f"path:{catalog_flake}")
    assert not (directory / "manifest.lock").exists()


def test_version_mismatch_is_an_error(tmp_path, catalog_flake):
    directory = write_env(tmp_path, HELLO + 'hello.version = "3.1"\n')
    with pytest.raises(LockError, match="version '3.1'.*hello 1.0"):
        lock_environment(directory, catalog=f"path:{catalog_flake}")
    ok = write_env(tmp_path, HELLO + 'hello.version = "1"\n', "ok")
    lock_environment(ok, catalog=f"path:{catalog_flake}")  # a version prefix matches


def test_unreachable_catalog_says_to_pass_catalog(tmp_path):
    directory = write_env(tmp_path, HELLO)
    with pytest.raises(NixError) as info:
        lock_environment(directory, catalog=f"path:{tmp_path}/no-such-catalog")
    assert "--catalog" in (info.value.hint or "")


def test_cli_lock_json(tmp_path, catalog_flake, capsys):
    directory = write_env(tmp_path, HELLO)
    with pytest.raises(SystemExit) as code:
        main(["env", "lock", str(directory), "--catalog", f"path:{catalog_flake}", "-o", "json"])
    assert code.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["path"] == str(directory / "manifest.lock")
    assert data["digest"] == load_lock(directory / "manifest.lock").digest()
    assert data["systems"] == [current_system()]
