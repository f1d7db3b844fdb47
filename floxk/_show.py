"""`floxk env show`: describe an environment (directory or hub ref) as plain data.

The dict returned is the JSON a script reads (`-o json`); its keys are stable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from floxk._envdir import lock_path, manifest_path
from shim.core.errors import ConfigError, LockError, NotFoundError
from shim.core.model import (
    InstallDescriptor,
    Lock,
    LockedPackage,
    Manifest,
    load_lock,
    load_manifest,
)
from shim.core.names import split_env_ref

# Sections whose difference between manifest.toml and the lock's copy means a stale lock.
_LOCKED_SECTIONS = ("install", "vars", "hook", "profile", "options")


def describe(target: str, *, hub: str | None = None) -> dict[str, Any]:
    """Describe TARGET: an existing directory, else a hub ref OWNER/NAME[:GEN]."""
    path = Path(target)
    if path.is_dir():
        return describe_dir(path)
    if split_env_ref(target) is None:  # the one ref grammar (pod annotations, the hub)
        raise NotFoundError(
            f"{target} is neither an environment directory nor a hub ref",
            hint="give a directory holding manifest.toml, or OWNER/NAME[:GENERATION]",
        )
    return describe_ref(target, hub=hub)


def describe_dir(directory: Path) -> dict[str, Any]:
    """From DIR/manifest.toml and, when present, DIR/manifest.lock."""
    toml_path, lock_file = manifest_path(directory), lock_path(directory)
    manifest = load_manifest(toml_path) if toml_path.exists() else None
    lock = load_lock(lock_file) if lock_file.exists() else None
    if lock is not None:
        data = describe_lock(lock, source=str(directory))
        if manifest is not None:  # manifest.toml's warnings name its lines; the lock's cannot
            data["warnings"] = _unrealizable(lock) + manifest.warnings + _stale(manifest, lock)
        return data
    if manifest is None:
        raise NotFoundError(
            f"{directory} holds no manifest.toml", hint=f"create one: floxk env init {directory}"
        )
    data = _manifest_part(manifest, source=str(directory))
    data["warnings"] = [
        *manifest.warnings,
        f"not locked: {lock_file} does not exist; lock it with `floxk env lock {directory}`",
    ]
    return data


def describe_ref(ref: str, *, hub: str | None) -> dict[str, Any]:
    """From the hub: the lock of OWNER/NAME at GEN (default: the latest generation)."""
    if not hub:
        raise ConfigError(f"{ref} is a hub ref; say which hub", hint="pass --hub URL")
    from shim.core import (
        hub as hubs,  # written alongside; imported late so `show DIR` needs none of it
    )

    record = hubs.peek(ref, [hub])
    data = describe_lock(record.lock, source=f"{record.owner}/{record.name}:{record.generation}")
    data["warnings"].append(
        "shown as the hub serves it: its signature is not checked here "
        "(nodes check it against their trusted keys: `floxk env realize REF`)"
    )
    return data


def describe_lock(lock: Lock, *, source: str) -> dict[str, Any]:
    data = _manifest_part(lock.manifest, source=source)
    data["locked"] = True
    data["digest"] = lock.digest()
    data["lockfile_version"] = lock.lockfile_version
    data["systems"] = {system: [] for system in lock.systems()}
    for package in lock.packages:
        data["systems"].setdefault(package.system, []).append(_package(package))
    data["warnings"] = _unrealizable(lock) + lock.manifest.warnings
    return data


def _unrealizable(lock: Lock) -> list[str]:
    """Why no node can realize this lock (lockfile-version 0), as a warning; else nothing."""
    try:
        for system in lock.systems()[:1]:
            lock.packages_for(system)
    except LockError as e:
        return [str(e)]
    return []


def _manifest_part(manifest: Manifest, *, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "locked": False,
        "digest": None,
        "lockfile_version": None,
        "systems": {},
        "install": {iid: _descriptor(d) for iid, d in manifest.install.items()},
        "vars": dict(manifest.vars),
        "hook": manifest.hook_on_activate,
        "profile": dict(manifest.profile),
        "activate_mode": manifest.activate_mode,
        "warnings": list(manifest.warnings),
    }


def _descriptor(d: InstallDescriptor) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "pkg_path": d.pkg_path,
        "flake": d.flake,
        "store_path": d.store_path,
        "version": d.version,
        "systems": d.systems,
        "outputs": d.outputs,
        "priority": d.priority,
        "pkg_group": d.pkg_group,
    }


def _package(p: LockedPackage) -> dict[str, Any]:
    try:
        paths: list[str] | None = p.install_paths()
    except LockError:
        paths = None  # the lock is inconsistent; realize reports it, show still shows the rest
    return {
        "install_id": p.install_id,
        "outputs": dict(p.outputs),
        "outputs_to_install": p.outputs_to_install,
        "priority": p.priority,
        "group": p.group,
        "install_paths": paths,
    }


def _stale(manifest: Manifest, lock: Lock) -> list[str]:
    """Warn when manifest.toml was edited after locking (what Flox calls an outdated lock)."""
    # A composed environment's lock keeps the manifest as written under compose.composer.
    locked = (lock.raw.get("compose") or {}).get("composer") or lock.manifest.raw
    changed = [s for s in _LOCKED_SECTIONS if (manifest.raw.get(s) or {}) != (locked.get(s) or {})]
    if not changed:
        return []
    return [
        f"the lock is stale: [{'], ['.join(changed)}] of manifest.toml changed since it was "
        "locked; this shows the lock. Relock with `floxk env lock`"
    ]
