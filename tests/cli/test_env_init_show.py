"""`floxk env init` and `floxk env show`, through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from floxk.cli import main
from shim.core.model import load_lock, parse_manifest

CORPUS = Path(__file__).parents[1] / "env" / "flox-envs"
ENVS = sorted(p for p in CORPUS.iterdir() if (p / "manifest.lock").exists())


def floxk(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `floxk ARGV` in-process as the console script does; return (exit code, out, err)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, " ".join(err.split())  # rich may wrap diagnostics


def test_init_writes_a_manifest_that_parses_cleanly(tmp_path, capsys):
    target = tmp_path / "new" / "env"
    code, out, _ = floxk(capsys, "env", "init", target)
    assert code == 0
    text = (target / "manifest.toml").read_text()
    manifest = parse_manifest(text)
    assert manifest.version == 1 and manifest.warnings == []
    assert manifest.install == {} and manifest.systems
    assert "#" in text  # commented, like Flox's template
    assert "manifest.toml" in out


def test_init_refuses_to_overwrite(tmp_path, capsys):
    existing = tmp_path / "manifest.toml"
    existing.write_text("version = 1\n# mine\n")
    code, _, err = floxk(capsys, "env", "init", tmp_path)
    assert code == 1
    assert "already exists" in err
    assert existing.read_text() == "version = 1\n# mine\n"


@pytest.mark.parametrize("env", ENVS, ids=[e.name for e in ENVS])
def test_show_json_for_every_corpus_env(env, capsys):
    code, out, _ = floxk(capsys, "env", "show", env, "-o", "json")
    assert code == 0
    data = json.loads(out)
    lock = load_lock(env / "manifest.lock")
    assert data["source"] == str(env)
    assert data["locked"] is True
    assert data["digest"] == lock.digest()
    assert data["lockfile_version"] == lock.lockfile_version
    assert set(data["systems"]) == set(lock.systems())
    shown = [(p["install_id"], s) for s, pkgs in data["systems"].items() for p in pkgs]
    assert sorted(shown) == sorted((p.install_id, p.system) for p in lock.packages)
    for key in ("vars", "hook", "profile", "warnings", "activate_mode"):
        assert key in data
    assert data["vars"] == lock.manifest.vars
    for packages in data["systems"].values():
        for p in packages:
            assert set(p) >= {"install_id", "outputs", "outputs_to_install", "priority", "group"}


def test_show_text_has_a_table_per_system(capsys):
    env = CORPUS / "NacoSolutions__senshac"
    code, out, _ = floxk(capsys, "env", "show", env)
    assert code == 0
    lock = load_lock(env / "manifest.lock")
    for system in lock.systems():
        assert system in out
    for package in lock.packages:
        assert package.install_id in out
    for name in lock.manifest.vars:
        assert name in out


def test_show_unlocked_directory_lists_declared_packages(tmp_path, capsys):
    (tmp_path / "manifest.toml").write_text(
        'version = 1\n[install]\nhello.pkg-path = "hello"\n[vars]\nA = "b"\n'
    )
    code, out, err = floxk(capsys, "env", "show", tmp_path, "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["locked"] is False and data["digest"] is None and data["systems"] == {}
    assert data["install"]["hello"]["pkg_path"] == "hello"
    assert data["vars"] == {"A": "b"}
    assert any("not locked" in w for w in data["warnings"])
    assert "not locked" in err  # diagnostics go to stderr, data to stdout


def test_show_warns_about_a_stale_lock(tmp_path, capsys):
    env = CORPUS / "9diov__flashfill"
    shutil.copy(env / "manifest.lock", tmp_path)
    text = (env / "manifest.toml").read_text()
    (tmp_path / "manifest.toml").write_text(
        text.replace("\n[install]\n", '\n[install]\nzz.pkg-path = "zz"\n', 1)
    )
    code, out, _ = floxk(capsys, "env", "show", tmp_path, "-o", "json")
    assert code == 0
    assert any("stale" in w for w in json.loads(out)["warnings"])
    (tmp_path / "manifest.toml").write_text(text)
    code, out, _ = floxk(capsys, "env", "show", tmp_path, "-o", "json")
    assert not any("stale" in w for w in json.loads(out)["warnings"])


def test_show_of_v0_lock_says_it_cannot_be_realized(capsys):
    env = CORPUS / "Baughn__sd-bot"
    code, out, _ = floxk(capsys, "env", "show", env, "-o", "json")
    assert code == 0
    assert any("lockfile-version 0" in w for w in json.loads(out)["warnings"])


def test_show_broken_manifest_fails_naming_the_line(tmp_path, capsys):
    (tmp_path / "manifest.toml").write_text('version = 1\n[install]\nhello.colour = "red"\n')
    code, _, err = floxk(capsys, "env", "show", tmp_path)
    assert code == 1
    assert "line 3" in err and "install.hello.colour" in err


def test_show_ref_without_hub_asks_for_one(capsys):
    code, _, err = floxk(capsys, "env", "show", "alice/hello:2")
    assert code == 1 and "--hub" in err


def test_show_of_nothing_is_not_found(tmp_path, capsys):
    code, _, err = floxk(capsys, "env", "show", tmp_path / "no" / "such" / "dir")
    assert code == 3 and "neither" in err
    code, _, err = floxk(capsys, "env", "show", tmp_path)
    assert code == 3 and "manifest.toml" in err


@pytest.mark.nix
def test_show_ref_reads_the_hub(tmp_path, capsys):
    from shim.core import hub
    from tests import attacker

    lock = load_lock(CORPUS / "9diov__flashfill" / "manifest.lock")
    record = hub.make_record("alice", "flash", 1, lock, created="2025-01-01T00:00:00Z")
    (tmp_path / "record.json").write_text(json.dumps(record))
    attacker.point(
        tmp_path, "alice", "flash", 1, attacker.add_unsigned(tmp_path, tmp_path / "record.json")
    )
    (tmp_path / hub.latest_path("alice", "flash")).write_text("1\n")
    url = tmp_path.as_uri()

    code, out, _ = floxk(capsys, "env", "show", "alice/flash", "--hub", url, "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["source"] == "alice/flash:1"
    assert data["digest"] == lock.digest()
    assert set(data["systems"]) == set(lock.systems())
    assert any("signature is not checked here" in w for w in data["warnings"])

    code, _, err = floxk(capsys, "env", "show", "alice/other", "--hub", url)
    assert code == 3 and "alice/other" in err
