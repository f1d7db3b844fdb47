"""Flox lock files as data: manifest.lock (lockfile v1, read-only v0), strict like the manifest.

Standard library only; both sides read locks through this module (shim.core.model is the
manifest it embeds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shim.core.digest import lock_digest
from shim.core.errors import LockError
from shim.core.model import (
    DEFAULT_PRIORITY,
    Manifest,
    _is_str_list,
    _read_text,
    manifest_from_dict,
    output_path_problem,
)


@dataclass
class LockedPackage:
    """One package of a lock, for one system."""

    install_id: str
    system: str
    outputs: dict[str, str]  # output name -> store path
    outputs_to_install: list[str] | None
    priority: int = DEFAULT_PRIORITY
    group: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    # The manifest descriptor's `outputs` ("all" or names); it overrides outputs_to_install.
    requested_outputs: list[str] | str | None = None

    def install_paths(self) -> list[str]:
        """Store paths that go into the environment tree, in a stable order."""
        if self.requested_outputs == "all":
            names = sorted(self.outputs)
        elif self.requested_outputs:
            names = list(self.requested_outputs)
        elif self.outputs_to_install:
            names = list(self.outputs_to_install)
        else:  # Nix's default when a package declares nothing: its "out" output
            names = ["out"] if "out" in self.outputs else sorted(self.outputs)
        missing = [n for n in names if n not in self.outputs]
        if missing:
            raise LockError(
                f"package '{self.install_id}' ({self.system}) has no output(s) "
                f"{', '.join(missing)}; it has {', '.join(sorted(self.outputs)) or 'none'}",
                hint="relock the environment",
            )
        return list(dict.fromkeys(self.outputs[n] for n in names))


@dataclass
class Lock:
    lockfile_version: int
    manifest: Manifest
    packages: list[LockedPackage]
    raw: dict[str, Any]
    source: str = "manifest.lock"

    def systems(self) -> list[str]:
        """Systems this lock can be realized for."""
        declared = set(self.manifest.systems or [])
        return sorted(declared | {p.system for p in self.packages})

    def packages_for(self, system: str) -> list[LockedPackage]:
        """Packages to realize on `system`; LockError when the lock does not cover it."""
        if self.lockfile_version == 0:
            raise LockError(
                f"{self.source} is lockfile-version 0, which records no store paths; "
                "floxk cannot realize it",
                hint="relock it: `flox upgrade` writes lockfile-version 1 "
                "(or lock it with `floxk env lock DIR`)",
            )
        chosen = [p for p in self.packages if p.system == system]
        # An environment without packages (vars and hooks only) fits any allowed system.
        if chosen or system in self.systems() or not self.systems():
            return chosen
        raise LockError(
            f"{self.source} has no packages for {system}; "
            f"it is locked for: {', '.join(self.systems())}",
            hint=f"add {system!r} to options.systems and relock",
        )

    def digest(self) -> str:
        """sha256 of the lock's canonical JSON: same content, same digest, whatever the layout."""
        return lock_digest(self.raw)


def parse_lock(text: str, *, source: str = "manifest.lock") -> Lock:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise LockError(
            f"{source}, line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}",
            hint="relock the environment",
        ) from None
    except (ValueError, RecursionError) as e:  # an int past Python's digit limit; deep nesting
        raise LockError(f"{source}: invalid JSON: {e}", hint="relock the environment") from None
    return lock_from_dict(raw, source=source)


def load_lock(path: str | Path) -> Lock:
    path = Path(path)
    text = _read_text(path, LockError, "lock the environment with `floxk env lock DIR`")
    return parse_lock(text, source=str(path))


def dump_lock(raw: dict[str, Any]) -> str:
    """The lock as written to manifest.lock: sorted keys, two-space indent, final newline."""
    return json.dumps(raw, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def lock_from_dict(raw: Any, *, source: str = "manifest.lock") -> Lock:
    if not isinstance(raw, dict):
        raise LockError(f"{source}: a lock must be a JSON object")
    version = raw.get("lockfile-version")
    if version not in (0, 1) or isinstance(version, bool):
        raise LockError(
            f"{source}: lockfile-version {version!r} is not supported (floxk reads 1, and shows 0)",
            hint="relock the environment",
        )
    embedded = raw.get("manifest")
    if not isinstance(embedded, dict):
        raise LockError(f"{source}: has no 'manifest' object", hint="relock the environment")
    try:
        lock_digest(raw)
    except UnicodeEncodeError:  # JSON may escape a lone surrogate; no UTF-8 has one
        raise LockError(
            f"{source}: holds a string that is not valid Unicode (a lone \\u surrogate escape)",
            hint="relock the environment",
        ) from None
    manifest = manifest_from_dict(embedded, source=f"{source} (manifest)")
    packages = raw.get("packages")
    if version == 0:
        locked = _v0_packages(packages, source)
    else:
        locked = _v1_packages(packages, manifest, source)
    return Lock(
        lockfile_version=version, manifest=manifest, packages=locked, raw=raw, source=source
    )


def _v1_packages(packages: Any, manifest: Manifest, source: str) -> list[LockedPackage]:
    """Lockfile v1: a list, one entry per (install_id, system).

    Catalog entries use snake_case (`outputs_to_install`, `group`); flake entries use
    kebab-case (`outputs-to-install`, no group); store-path entries carry only `store_path`.
    """
    if not isinstance(packages, list):
        raise LockError(f"{source}: 'packages' must be a list in lockfile-version 1")
    locked = []
    for index, entry in enumerate(packages):
        where = f"{source}: packages[{index}]"
        if not isinstance(entry, dict):
            raise LockError(f"{where} must be an object")
        install_id, system = entry.get("install_id"), entry.get("system")
        if not isinstance(install_id, str) or not isinstance(system, str):
            raise LockError(f"{where} needs string 'install_id' and 'system'")
        if "store_path" in entry:
            outputs: Any = {"out": entry["store_path"]}
            to_install: Any = ["out"]
        else:
            outputs = entry.get("outputs")
            to_install = entry.get("outputs_to_install", entry.get("outputs-to-install"))
        if not isinstance(outputs, dict) or not outputs:
            raise LockError(f"{where} ('{install_id}') has no outputs")
        for name, path in outputs.items():
            problem = output_path_problem(path)
            if problem:
                raise LockError(
                    f"{where} ('{install_id}') output {name!r} {problem}",
                    hint="a lock names built outputs (`floxk env lock` writes them)",
                )
        if to_install is not None and not _is_str_list(to_install):
            raise LockError(f"{where} ('{install_id}') outputs to install must be a list")
        priority = entry.get("priority", DEFAULT_PRIORITY)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise LockError(f"{where} ('{install_id}') priority must be an integer")
        descriptor = manifest.install.get(install_id)
        locked.append(
            LockedPackage(
                install_id=install_id,
                system=system,
                outputs=dict(outputs),
                outputs_to_install=list(dict.fromkeys(to_install)) if to_install else None,
                priority=priority,
                group=entry.get("group"),
                raw=entry,
                requested_outputs=descriptor.outputs if descriptor else None,
            )
        )
    return locked


def _v0_packages(packages: Any, source: str) -> list[LockedPackage]:
    """Lockfile v0: {system: {install_id: {attr-path, info, input, priority}}}, no store paths.

    Read well enough to show; Lock.packages_for() refuses to realize it.
    """
    if not isinstance(packages, dict):
        raise LockError(f"{source}: 'packages' must be an object in lockfile-version 0")
    locked = []
    for system, entries in sorted(packages.items()):
        if not isinstance(entries or {}, dict):
            raise LockError(
                f"{source}: packages.{system} must be an object of install ids in "
                f"lockfile-version 0, not {type(entries).__name__}"
            )
        for install_id, entry in sorted((entries or {}).items()):
            entry = entry if isinstance(entry, dict) else {}
            priority = entry.get("priority", DEFAULT_PRIORITY)
            if not isinstance(priority, int) or isinstance(priority, bool):
                raise LockError(
                    f"{source}: packages.{system}.{install_id} priority must be an integer"
                )
            locked.append(
                LockedPackage(
                    install_id=install_id,
                    system=system,
                    outputs={},
                    outputs_to_install=None,
                    priority=priority,
                    group=None,
                    raw=entry,
                )
            )
    return locked
