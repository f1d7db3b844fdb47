"""What an attacker who can write a hub and its binary cache, but has no trusted signing
key, can do to it: real Nix, real files (a compromised bucket, a misconfigured web server,
a man in the middle of an http hub all amount to this). Used by the trust tests in
tests/env, tests/shim and tests/cri.

Every function edits a file:// cache the way such an attacker could: reading what is
public, adding store paths unsigned (or signed with a key of their own), rewriting the
hub's pointers and `latest`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from shim import hub
from shim.digest import lock_digest
from shim.nix import base_options

NIX = ["nix", *base_options(), "--option", "extra-experimental-features", "nix-command"]


def _nix(*args: str) -> str:
    return subprocess.run([*NIX, *args], check=True, capture_output=True, text=True).stdout.strip()


def pointer_file(cache: Path, owner: str, name: str, generation: int) -> Path:
    return Path(cache) / hub.record_path(owner, name, generation)


def record_of(cache: Path, owner: str, name: str, generation: int) -> tuple[str, dict]:
    """(store path, content) of a published record: both are public."""
    pointer = json.loads(pointer_file(cache, owner, name, generation).read_text())
    path = pointer["record"]
    return path, json.loads(_nix("store", "cat", "--store", Path(cache).as_uri(), path))


def add_unsigned(cache: Path, source: Path, *, flat: bool = True) -> str:
    """Add a file (flat) or a directory to the cache: a content-addressed path, unsigned."""
    verb = "add-file" if flat else "add-path"
    return _nix("store", verb, "--store", Path(cache).as_uri(), str(source)).splitlines()[-1]


def sign_with(cache: Path, path: str, secret_key: Path) -> None:
    """Sign a path in the cache with a key of the attacker's own."""
    _nix("store", "sign", "--store", Path(cache).as_uri(), "--key-file", str(secret_key), path)


def point(cache: Path, owner: str, name: str, generation: int, store_path: str) -> None:
    """Rewrite the hub's pointer owner/name/<generation>.json to `store_path`."""
    file = pointer_file(cache, owner, name, generation)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(hub.make_pointer(owner, name, generation, store_path)))


def set_latest(cache: Path, owner: str, name: str, generation: int) -> None:
    (Path(cache) / hub.latest_path(owner, name)).write_text(f"{generation}\n")


def forge_record(
    cache: Path,
    work: Path,
    owner: str,
    name: str,
    generation: int,
    change: Callable[[dict], None],
    *,
    secret_key: Path | None = None,
) -> str:
    """Edit a published record (`change` mutates its content), recompute its digest, add
    it to the cache (unsigned, or signed with the attacker's `secret_key`) and point the
    hub at it. Returns the forged record's store path."""
    _, record = record_of(cache, owner, name, generation)
    change(record)
    record["digest"] = lock_digest(record["lock"])
    work.mkdir(parents=True, exist_ok=True)
    file = work / hub.record_store_name(owner, name, generation)
    file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    path = add_unsigned(cache, file)
    if secret_key is not None:
        sign_with(cache, path, secret_key)
    point(cache, owner, name, generation, path)
    return path


def inject_hook(record: dict) -> None:
    """Attack 1: a hook that runs before the command, and LD_PRELOAD in the vars."""
    manifest = record["lock"]["manifest"]
    manifest.setdefault("hook", {})["on-activate"] = "echo INJECTED; id -u"
    manifest.setdefault("vars", {})["LD_PRELOAD"] = "/tmp/evil.so"


def point_output_at(install_id: str, store_path: str) -> Callable[[dict], None]:
    """Attacks 2 and 3: the lock's output of `install_id` names another store path."""

    def change(record: dict) -> None:
        for package in record["lock"]["packages"]:
            if package["install_id"] == install_id:
                package["outputs"] = {"out": store_path}
                package["outputs_to_install"] = ["out"]

    return change
