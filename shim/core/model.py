"""Flox environments as data: manifest.toml and manifest.lock (lockfile v1, read-only v0).

Both sides use this module: the CLI to show and lock environments, the node to realize them.
Standard library only. Parsing is strict where a typo would silently change an environment
(unknown keys, wrong types are errors naming the key and its line) and loud where floxk
does not do what Flox would (`Manifest.warnings` names each such key).
"""

from __future__ import annotations

import json
import platform
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shim.core.digest import lock_digest
from shim.core.errors import FloxkError, LockError, ManifestError

DEFAULT_PRIORITY = 5

# A store path as Nix writes it: nothing else may end up as a symlink target or a mount.
STORE_PATH_RE = re.compile(r"^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$")


def output_path_problem(value: Any) -> str | None:
    """Why `value` cannot be a locked output (None when it can): outputs are store paths,
    never derivations (a node would build a `.drv` instead of fetching something signed)."""
    if not isinstance(value, str) or not STORE_PATH_RE.match(value):
        return f"is not a Nix store path: {value!r}"
    if value.endswith(".drv"):
        return f"names a derivation, not a built output: {value!r} (nodes never build)"
    return None


# Top-level keys floxk acts on, and keys Flox knows that floxk reads but does not act on.
_HONOURED = {"version", "schema-version", "install", "vars", "hook", "profile", "options"}
_NOT_HONOURED = {
    "services": "services are not started by floxk; run them as containers of the pod",
    "include": "composed environments are not resolved by floxk; lock with Flox (the lock "
    "then carries the merged result)",
    "build": "floxk does not build packages; build and publish them, then install them",
    "containerize": "floxk runs environments without images; container settings do not apply",
    "plugins": "Flox plugins are not supported",
    "registry": "lockfile-version 0 registries are not used; relock with `flox upgrade`",
}
# Accepted and ignored on purpose: they concern the Flox CLI, not the environment's content.
_IGNORED = {"minimum-cli-version", "description"}

_DESCRIPTOR_KEYS = {
    "pkg-path",
    "flake",
    "store-path",
    "version",
    "systems",
    "outputs",
    "priority",
    "pkg-group",
}
_HOOK_KEYS = {"on-activate", "on-deactivate"}
_PROFILE_SHELLS = {"common", "bash", "zsh", "fish", "tcsh"}
_ACTIVATE_MODES = ("run", "dev")


def current_system() -> str:
    """This machine as a Nix system string, e.g. "x86_64-linux"."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    kernel = "darwin" if sys.platform == "darwin" else sys.platform.rstrip("0123456789")
    return f"{arch}-{kernel}"


# --- where keys are in the text (tomllib gives no positions) --------------------------

_BARE_KEY = r"[A-Za-z0-9_-]+"
_KEY_PART = rf'(?:{_BARE_KEY}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED_KEY = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*")
_PART = re.compile(_KEY_PART)


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map dotted keys to the 1-based line that defines them, for the common TOML forms.

    Handles `[a.b]` / `[[a]]` headers, `k = ...` and `a.b = ...` inside a table, and
    keys of a one-line inline table `k = { x = 1 }`. Lines inside multi-line strings are
    skipped. Each prefix of a key maps to the first line that mentions it.
    """
    found: dict[tuple[str, ...], int] = {}
    for number, key in _scan_keys(text):
        for i in range(1, len(key) + 1):
            found.setdefault(key[:i], number)
    return found


def _scan_keys(text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Yield (line number, dotted key) for each key a line defines, in text order."""
    table: tuple[str, ...] = ()
    in_string: str | None = None  # the delimiter of an open multi-line string
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if line.count(in_string) % 2:
                in_string = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = re.match(r"^\[\[?([^\]]*)\]\]?", stripped)
        if header:
            table = _split_key(header.group(1))
            yield number, table
            continue
        m = _DOTTED_KEY.match(line)
        if not m or not line[m.end() :].startswith("="):
            continue
        key = table + _split_key(m.group(1))
        yield number, key
        value = line[m.end() + 1 :].lstrip()
        if value.startswith("{"):
            for inner in re.finditer(rf"[{{,]\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=", value):
                yield number, key + _split_key(inner.group(1))
        for delim in ('"""', "'''"):
            if value.count(delim) % 2:
                in_string = delim
                break


class _Where:
    """Names a key and, when the manifest came from text, its line."""

    def __init__(self, source: str, text: str | None) -> None:
        self.source = source
        self.lines = key_lines(text) if text is not None else {}

    def line(self, *key: str) -> int | None:
        for i in range(len(key), 0, -1):  # the key itself, else its nearest parent
            if key[:i] in self.lines:
                return self.lines[key[:i]]
        return None

    def at(self, *key: str) -> str:
        line = self.line(*key)
        where = f"{self.source}, line {line}" if line else self.source
        return f"{where}: '{'.'.join(key)}'"

    def error(self, key: tuple[str, ...], problem: str, hint: str | None = None) -> ManifestError:
        return ManifestError(f"{self.at(*key)} {problem}", hint=hint)


# --- manifest ------------------------------------------------------------------------


@dataclass
class InstallDescriptor:
    """One entry of [install]: what to install under `install_id`."""

    install_id: str
    kind: str  # "catalog" | "flake" | "store-path"
    pkg_path: str | None = None
    version: str | None = None
    systems: list[str] | None = None
    outputs: list[str] | str | None = None  # a list of output names, or "all"
    priority: int = DEFAULT_PRIORITY
    pkg_group: str | None = None
    flake: str | None = None
    store_path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    version: int | str  # 1, a schema-version string like "1.10.0", or 0 for a pre-1 manifest
    install: dict[str, InstallDescriptor] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    hook_on_activate: str | None = None
    profile: dict[str, str] = field(default_factory=dict)  # shell -> script; "common" for all
    systems: list[str] | None = None
    activate_mode: str | None = None
    includes: list[dict[str, Any]] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # all of [options], as written


def parse_manifest(text: str, *, source: str = "manifest.toml") -> Manifest:
    """Parse manifest.toml text; ManifestError names the line and key of what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _toml_error(e, text, source) from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ManifestError(f"{source}: invalid TOML: nested too deeply") from None
    return manifest_from_dict(data, source=source, text=text)


def _read_text(path: Path, error: type[FloxkError], missing_hint: str) -> str:
    """The file's text, or `error` saying it is missing (with the fix) or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path} does not exist", hint=missing_hint) from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from None


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    text = _read_text(path, ManifestError, "create one with `floxk env init DIR`")
    return parse_manifest(text, source=str(path))


def _toml_error(e: tomllib.TOMLDecodeError, text: str, source: str) -> ManifestError:
    message = str(e)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if not m:
        return ManifestError(f"{source}: invalid TOML: {message}")
    line = int(m.group(1))
    what = message[: m.start()]
    key = next((k for n, k in _scan_keys(text) if n == line), None)
    named = f" (key '{'.'.join(key)}')" if key else ""
    return ManifestError(
        f"{source}, line {line}, column {m.group(2)}: invalid TOML: {what}{named}",
        hint="fix the TOML syntax on that line",
    )


def manifest_from_dict(
    data: dict[str, Any], *, source: str = "manifest", text: str | None = None
) -> Manifest:
    """Build a Manifest from parsed TOML or from the JSON copy a lock embeds."""
    where = _Where(source, text)
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: the manifest must be a table")
    for key in data:
        if key not in _HONOURED and key not in _NOT_HONOURED and key not in _IGNORED:
            raise where.error(
                (key,),
                "is not a manifest key",
                hint="known keys: " + ", ".join(sorted(_HONOURED | set(_NOT_HONOURED))),
            )
    manifest = Manifest(version=_version(data, where), raw=data)
    if manifest.version == 0:
        manifest.warnings.append(
            "manifest has no 'version' or 'schema-version': read as a pre-1 Flox manifest; "
            "add `version = 1`"
        )
    manifest.install = {
        install_id: _descriptor(install_id, value, where)
        for install_id, value in _table(data, "install", where).items()
    }
    manifest.vars = _vars(_table(data, "vars", where), where)
    _hook(_table(data, "hook", where), manifest, where)
    _profile(_table(data, "profile", where), manifest, where)
    _options(_table(data, "options", where), manifest, where)
    manifest.services = _table(data, "services", where)
    include = _table(data, "include", where)
    environments = include.get("environments", [])
    manifest.includes = list(environments) if isinstance(environments, list) else []
    for key, why in _NOT_HONOURED.items():
        if data.get(key):
            manifest.warnings.append(f"{where.at(key)} is not honoured by floxk: {why}")
    return manifest


def _version(data: dict[str, Any], where: _Where) -> int | str:
    if "version" in data and "schema-version" in data:
        raise where.error(("schema-version",), "and 'version' are both set", hint="keep one")
    if "schema-version" in data:
        value = data["schema-version"]
        if not isinstance(value, str) or not re.fullmatch(r"1\.[0-9]+(\.[0-9]+)?", value):
            raise where.error(
                ("schema-version",),
                f"is {value!r}; floxk reads schema-version 1.x",
                hint='e.g. schema-version = "1.10.0"',
            )
        return value
    if "version" in data:
        if data["version"] != 1 or isinstance(data["version"], bool):
            raise where.error(
                ("version",), f"is {data['version']!r}; floxk reads version = 1", hint="version = 1"
            )
        return 1
    return 0


def _table(data: dict[str, Any], key: str, where: _Where) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error((key,), f"must be a table, not {type(value).__name__}")
    return value


def _descriptor(install_id: str, value: Any, where: _Where) -> InstallDescriptor:
    key = ("install", install_id)
    if not isinstance(value, dict):
        raise where.error(key, "must be a table", hint=f'{install_id}.pkg-path = "{install_id}"')
    for name in value:
        if name not in _DESCRIPTOR_KEYS:
            raise where.error(
                key + (name,),
                "is not a package descriptor key",
                hint="known keys: " + ", ".join(sorted(_DESCRIPTOR_KEYS)),
            )
    sources = [k for k in ("pkg-path", "flake", "store-path") if k in value]
    if len(sources) != 1:
        raise where.error(
            key,
            "needs exactly one of pkg-path, flake, store-path"
            + (f" (has {', '.join(sources)})" if sources else ""),
        )
    for name in ("pkg-path", "flake", "store-path", "version", "pkg-group"):
        if name in value and not isinstance(value[name], str):
            raise where.error(key + (name,), "must be a string")
    store_path = value.get("store-path")
    problem = output_path_problem(store_path) if store_path is not None else None
    if problem:
        raise where.error(key + ("store-path",), problem)
    systems = value.get("systems")
    if systems is not None and not _is_str_list(systems):
        raise where.error(key + ("systems",), "must be a list of system strings")
    outputs = value.get("outputs")
    if outputs is not None and outputs != "all" and not _is_str_list(outputs):
        raise where.error(key + ("outputs",), 'must be "all" or a list of output names')
    priority = value.get("priority", DEFAULT_PRIORITY)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise where.error(key + ("priority",), "must be a non-negative integer")
    kind = {"pkg-path": "catalog", "flake": "flake", "store-path": "store-path"}[sources[0]]
    return InstallDescriptor(
        install_id=install_id,
        kind=kind,
        pkg_path=value.get("pkg-path"),
        version=value.get("version"),
        systems=list(systems) if systems is not None else None,
        outputs=outputs if outputs == "all" or outputs is None else list(outputs),
        priority=priority,
        pkg_group=value.get("pkg-group"),
        flake=value.get("flake"),
        store_path=store_path,
        raw=value,
    )


def _vars(table: dict[str, Any], where: _Where) -> dict[str, str]:
    for name, value in table.items():
        if not isinstance(value, str):
            raise where.error(
                ("vars", name),
                f"must be a string, not {type(value).__name__}",
                hint=f'quote it: {name} = "{value}"',
            )
        # Set verbatim as NAME=value in the container: an '=' in the name would set another
        # variable, and no environment holds a NUL.
        if not name or "=" in name or "\0" in name:
            raise where.error(("vars", name), "is not an environment variable name")
        if "\0" in value:
            raise where.error(("vars", name), "holds a NUL character")
    return dict(table)


def _hook(table: dict[str, Any], manifest: Manifest, where: _Where) -> None:
    for name, value in table.items():
        if name not in _HOOK_KEYS:
            raise where.error(("hook", name), "is not a hook key", hint="use hook.on-activate")
        if not isinstance(value, str):
            raise where.error(("hook", name), "must be a string (a bash script)")
    manifest.hook_on_activate = table.get("on-activate")
    if table.get("on-deactivate"):
        manifest.warnings.append(
            f"{where.at('hook', 'on-deactivate')} is not honoured by floxk: "
            "containers are never deactivated"
        )


def _profile(table: dict[str, Any], manifest: Manifest, where: _Where) -> None:
    for name, value in table.items():
        if name == "deactivate":
            manifest.warnings.append(
                f"{where.at('profile', 'deactivate')} is not honoured by floxk: "
                "containers are never deactivated"
            )
            continue
        if name not in _PROFILE_SHELLS:
            raise where.error(
                ("profile", name),
                "is not a profile key",
                hint="known keys: " + ", ".join(sorted(_PROFILE_SHELLS)),
            )
        if not isinstance(value, str):
            raise where.error(("profile", name), "must be a string (a shell script)")
        manifest.profile[name] = value


def _options(table: dict[str, Any], manifest: Manifest, where: _Where) -> None:
    manifest.options = table
    systems = table.get("systems")
    if systems is not None and not _is_str_list(systems):
        raise where.error(("options", "systems"), "must be a list of system strings")
    manifest.systems = list(systems) if systems is not None else None
    activate = table.get("activate") or {}
    if not isinstance(activate, dict):
        raise where.error(("options", "activate"), "must be a table")
    mode = activate.get("mode")
    if mode is not None and mode not in _ACTIVATE_MODES:
        raise where.error(("options", "activate", "mode"), f'is {mode!r}; use "run" or "dev"')
    manifest.activate_mode = mode


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# --- lock ------------------------------------------------------------------------------


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
            outputs = {"out": entry["store_path"]}
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
