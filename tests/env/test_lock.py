"""manifest.lock: Flox lockfile v1 entries of each kind, v0 refusal, digest identity."""

from __future__ import annotations

import copy
import hashlib
import json
import re

import pytest

from shim.core.errors import LockError
from shim.core.model import dump_lock, load_lock, lock_from_dict, parse_lock

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def store_path(name: str) -> str:
    """A well-formed store path whose hash part is derived from the name."""
    digest = hashlib.sha256(name.encode()).digest()
    return "/nix/store/" + "".join(NIX32[b % 32] for b in digest[:32]) + "-" + name


def catalog_entry(install_id, system, outputs, to_install, priority=5, group="toplevel"):
    """Shaped like the catalog entries the Flox CLI writes (snake_case keys)."""
    return {
        "attr_path": install_id,
        "broken": False,
        "derivation": store_path(f"{install_id}.drv"),
        "group": group,
        "install_id": install_id,
        "locked_url": "https://github.com/flox/nixpkgs?rev=0000000000000000000000000000000000000000",
        "name": install_id,
        "outputs": {name: store_path(f"{install_id}-{system}-{name}") for name in outputs},
        "outputs_to_install": to_install,
        "pname": install_id,
        "priority": priority,
        "system": system,
        "unfree": False,
        "version": "1.0",
    }


def flake_entry(install_id, system):
    """Shaped like Flox's flake entries (kebab-case keys, no group)."""
    return {
        "install_id": install_id,
        "locked-url": "github:owner/repo/0000000000000000000000000000000000000000",
        "locked-flake-attr-path": f"packages.{system}.default",
        "derivation": store_path(f"{install_id}.drv"),
        "outputs": {"out": store_path(f"{install_id}-{system}"), "man": store_path("m")},
        "output-names": ["out", "man"],
        "outputs-to-install": ["out"],
        "requested-outputs-to-install": [],
        "package-system": system,
        "system": system,
        "name": install_id,
        "broken": False,
        "unfree": False,
        "priority": 5,
    }


SYSTEMS = ["x86_64-linux", "aarch64-linux"]
SCRIPTS = store_path("scripts-1.0")


def sample_lock() -> dict:
    packages = []
    for system in SYSTEMS:
        packages.append(catalog_entry("hello", system, ["out"], ["out"]))
        packages.append(catalog_entry("jq", system, ["bin", "man", "out"], ["bin", "man", "bin"]))
        packages.append(catalog_entry("pg", system, ["out", "lib", "doc"], ["out"], priority=3))
        packages.append(flake_entry("tool", system))
        packages.append(
            {"install_id": "scripts", "store_path": SCRIPTS, "system": system, "priority": 5}
        )
    return {
        "lockfile-version": 1,
        "manifest": {
            "version": 1,
            "install": {
                "hello": {"pkg-path": "hello"},
                "jq": {"pkg-path": "jq"},
                "pg": {"pkg-path": "postgresql", "outputs": "all", "priority": 3},
                "tool": {"flake": "github:owner/repo", "outputs": ["out", "man"]},
                "scripts": {"store-path": SCRIPTS},
            },
            "vars": {"GREETING": "Howdy"},
            "hook": {"on-activate": "echo hi"},
            "options": {"systems": SYSTEMS},
        },
        "packages": packages,
    }


def test_v1_lock_reads_every_kind_of_entry():
    lock = lock_from_dict(sample_lock())
    assert lock.lockfile_version == 1
    assert lock.systems() == sorted(SYSTEMS)
    assert lock.manifest.vars == {"GREETING": "Howdy"}
    assert lock.manifest.hook_on_activate == "echo hi"
    pkgs = {p.install_id: p for p in lock.packages_for("x86_64-linux")}
    assert set(pkgs) == {"hello", "jq", "pg", "tool", "scripts"}
    assert pkgs["pg"].priority == 3 and pkgs["pg"].group == "toplevel"
    assert pkgs["tool"].group is None and pkgs["tool"].outputs_to_install == ["out"]
    assert pkgs["scripts"].outputs == {"out": SCRIPTS}


def test_install_paths_follow_outputs_to_install_and_the_manifest():
    raw = sample_lock()
    pkgs = {p.install_id: p for p in lock_from_dict(raw).packages_for("aarch64-linux")}
    jq = pkgs["jq"]
    # outputs_to_install as locked, duplicates (seen in real locks) removed
    assert jq.install_paths() == [jq.outputs["bin"], jq.outputs["man"]]
    # outputs = "all" in the manifest wins over the lock's outputs_to_install
    assert sorted(pkgs["pg"].install_paths()) == sorted(pkgs["pg"].outputs.values())
    # an explicit list in the manifest wins too
    tool = pkgs["tool"]
    assert tool.install_paths() == [tool.outputs["out"], tool.outputs["man"]]
    assert pkgs["scripts"].install_paths() == [SCRIPTS]


def test_missing_requested_output_is_a_lock_error():
    raw = sample_lock()
    raw["manifest"]["install"]["hello"]["outputs"] = ["out", "dev"]
    hello = next(p for p in lock_from_dict(raw).packages if p.install_id == "hello")
    with pytest.raises(LockError, match="dev"):
        hello.install_paths()


def test_packages_for_an_unlocked_system_names_the_available_ones():
    lock = lock_from_dict(sample_lock())
    with pytest.raises(LockError) as info:
        lock.packages_for("riscv64-linux")
    assert "riscv64-linux" in info.value.message
    for system in SYSTEMS:
        assert system in info.value.message


def test_a_lock_without_packages_fits_any_system():
    raw = {"lockfile-version": 1, "manifest": {"version": 1, "vars": {"A": "b"}}, "packages": []}
    assert lock_from_dict(raw).packages_for("x86_64-linux") == []


def test_digest_is_stable_across_reparse_and_key_order():
    raw = sample_lock()
    text = json.dumps(raw, indent=2)
    reordered = json.dumps(_reverse_keys(raw), indent=7)
    assert text != reordered
    first = parse_lock(text).digest()
    assert first == parse_lock(text).digest()
    assert first == parse_lock(reordered).digest()
    assert first == parse_lock(dump_lock(raw)).digest()
    assert len(first) == 64 and int(first, 16) >= 0


def test_digest_changes_when_one_store_path_changes():
    raw = sample_lock()
    changed = copy.deepcopy(raw)
    changed["packages"][0]["outputs"]["out"] = store_path("hello-2.0")
    assert lock_from_dict(raw).digest() != lock_from_dict(changed).digest()


def test_dump_lock_is_canonical_and_round_trips():
    raw = sample_lock()
    text = dump_lock(raw)
    assert text.endswith("\n") and json.loads(text) == raw
    assert dump_lock(_reverse_keys(raw)) == text


def test_v0_lock_shows_but_does_not_realize():
    raw = {
        "lockfile-version": 0,
        "manifest": {"install": {"cargo": {"pkg-path": "cargo"}}, "registry": {"inputs": {}}},
        "packages": {"x86_64-linux": {"cargo": {"attr-path": ["cargo"], "priority": 5}}},
        "registry": {},
    }
    lock = lock_from_dict(raw, source="old/manifest.lock")
    assert [(p.install_id, p.system) for p in lock.packages] == [("cargo", "x86_64-linux")]
    assert lock.systems() == ["x86_64-linux"]
    with pytest.raises(LockError) as info:
        lock.packages_for("x86_64-linux")
    assert "lockfile-version 0" in info.value.message
    assert "old/manifest.lock" in info.value.message
    assert "flox upgrade" in info.value.hint


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda raw: raw.update({"lockfile-version": 2}), "lockfile-version 2"),
        (lambda raw: raw.pop("manifest"), "manifest"),
        (lambda raw: raw["packages"][0]["outputs"].update(out="/etc/passwd"), "/etc/passwd"),
        (lambda raw: raw["packages"][0].pop("system"), "packages[0]"),
        (lambda raw: raw["packages"][0].update(outputs={}), "no outputs"),
    ],
)
def test_invalid_locks_are_rejected(mutate, needle):
    raw = sample_lock()
    mutate(raw)
    with pytest.raises(LockError, match=re.escape(needle)):
        lock_from_dict(raw)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "manifest.lock"
    path.write_text('{\n  "lockfile-version": 1,\n  "manifest": {,\n}\n')
    with pytest.raises(LockError, match="line 3"):
        load_lock(path)


def _reverse_keys(value):
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value
