"""`floxk env lock`: resolve manifest.toml with real Nix and write manifest.lock (Flox v1).

Catalog entries (pkg-path) resolve in a catalog flake's legacyPackages.<system> (or
packages.<system>); flake entries in their own flake; store-path entries are taken as
written. Everything locked for this machine's system is built (or substituted), so
`floxk env push` has the closure. The lock uses the same keys as Flox's own locks, so
shim.core.model reads both the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shim.core import nix
from shim.core.atomic import write_atomic
from shim.core.errors import LockError
from shim.core.lockfile import Lock, dump_lock, parse_lock
from shim.core.model import InstallDescriptor, current_system, load_manifest

# The nixpkgs revision Flox's catalog served in September 2025 (seen in real Flox locks).
# Resolving against it needs the network; offline, pass --catalog with a local flake.
DEFAULT_CATALOG = "github:flox/nixpkgs/8d4ddb19d03c65a36ad8d189d001dc32ffb0306b"
DEFAULT_GROUP = "toplevel"


@dataclass
class LockResult:
    path: Path  # DIR/manifest.lock
    lock: Lock
    systems: list[str]
    built: list[str] = field(default_factory=list)  # store paths built or fetched here
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Flake:
    url: str  # as written
    locked_url: str
    metadata: dict[str, Any]


def lock_environment(
    directory: Path,
    *,
    catalog: str | None = None,
    systems: list[str] | None = None,
    build: bool = True,
) -> LockResult:
    """Resolve DIR/manifest.toml for `systems` (default: options.systems, else this
    machine's), build this machine's packages, and write DIR/manifest.lock."""
    directory = Path(directory)
    manifest = load_manifest(directory / "manifest.toml")
    here = current_system()
    systems = list(dict.fromkeys(systems or manifest.systems or [here]))
    warnings = list(manifest.warnings)
    flakes: dict[str, _Flake] = {}

    def flake(url: str) -> _Flake:
        if url not in flakes:
            flakes[url] = _metadata(url, is_catalog=url == (catalog or DEFAULT_CATALOG))
        return flakes[url]

    # What each flake is asked for: {url: {system: {install_id: candidate attr paths}}}, so
    # every flake is evaluated once (Nix's parse of nixpkgs is shared by all packages and
    # systems in one evaluation), however many packages and systems the manifest has.
    wanted_by_system = {
        system: {
            d.install_id: d
            for d in manifest.install.values()
            if d.systems is None or system in d.systems
        }
        for system in systems
    }
    asks: dict[str, dict[str, dict[str, list[list[str]]]]] = {}
    for system, wanted in wanted_by_system.items():
        for install_id, d in wanted.items():
            if d.kind == "catalog":
                url, candidates = (
                    catalog or DEFAULT_CATALOG,
                    _catalog_candidates(_pkg_path(d), system),
                )
            elif d.kind == "flake":
                url, _, fragment = _flake_ref(d).partition("#")
                candidates = _flake_candidates(fragment, system)
            else:
                continue
            asks.setdefault(url, {}).setdefault(system, {})[install_id] = candidates
    found = {url: _evaluate(flake(url), by_system) for url, by_system in asks.items()}

    packages: list[dict[str, Any]] = []
    for system, wanted in wanted_by_system.items():
        for install_id, descriptor in wanted.items():
            if descriptor.kind == "catalog":
                source = flake(catalog or DEFAULT_CATALOG)
                info = found[source.url][system][install_id]
                packages.append(_catalog_entry(descriptor, info, source, system, warnings))
        for install_id, descriptor in wanted.items():
            if descriptor.kind == "flake":
                source = flake(_flake_ref(descriptor).partition("#")[0])
                info = found[source.url][system][install_id]
                packages.append(_flake_entry(descriptor, info, source, system))
            elif descriptor.kind == "store-path":
                packages.append(
                    {
                        "install_id": install_id,
                        "store_path": descriptor.store_path,
                        "system": system,
                        "priority": descriptor.priority,
                    }
                )
    packages.sort(key=lambda p: (p["install_id"], p["system"]))
    raw = {"lockfile-version": 1, "manifest": manifest.raw, "packages": packages}
    text = dump_lock(raw)
    lock = parse_lock(text, source=str(directory / "manifest.lock"))  # what we write must read

    built: list[str] = []
    if build:
        built = _build(lock, here, packages, warnings)
    for system in systems:
        if system != here and any(p["system"] == system for p in packages):
            warnings.append(
                f"packages for {system} are locked but not built here ({here}); "
                f"`floxk env push` can only publish what is in this machine's store"
            )
    path = directory / "manifest.lock"
    write_atomic(path, text, None, durable=True)
    return LockResult(path=path, lock=lock, systems=systems, built=built, warnings=warnings)


# --- Nix ---------------------------------------------------------------------------------


def _metadata(url: str, *, is_catalog: bool) -> _Flake:
    hint = (
        "the default catalog (nixpkgs) needs the network; pass --catalog FLAKEREF "
        "(e.g. a local flake: --catalog path:/some/dir)"
        if is_catalog
        else "check the flake reference in [install]"
    )
    out = nix.run_nix(
        ["nix", *nix.base_options(), *nix.option("connect-timeout", "15")]
        + ["flake", "metadata", "--json", url],
        what=f"resolving flake {url}",
        hint=hint,
    )
    metadata = json.loads(out)
    return _Flake(url=url, locked_url=metadata["url"], metadata=metadata)


# Evaluates to {system: {install_id: null | info}}. Attribute paths are tried in order.
_EVAL = """
let
  flake = builtins.getFlake %(url)s;
  has = path: set: path == [ ] || (builtins.isAttrs set
    && builtins.hasAttr (builtins.head path) set
    && has (builtins.tail path) (builtins.getAttr (builtins.head path) set));
  get = path: set: builtins.foldl' (s: k: builtins.getAttr k s) set path;
  license = l:
    if builtins.isList l then builtins.concatStringsSep " " (map license l)
    else if builtins.isAttrs l then (l.spdxId or l.shortName or null)
    else l;
  info = attrPath: p:
    let parsed = builtins.parseDrvName p.name; meta = p.meta or { }; in {
      inherit attrPath;
      name = p.name;
      pname = p.pname or parsed.name;
      version = p.version or (if parsed.version == "" then null else parsed.version);
      drvPath = p.drvPath;
      outputs = builtins.listToAttrs (map
        (o: { name = o; value = (builtins.getAttr o p).outPath; })
        (p.outputs or [ "out" ]));
      outputsToInstall = meta.outputsToInstall or null;
      description = meta.description or null;
      license = license (meta.license or null);
      broken = meta.broken or false;
      unfree = meta.unfree or false;
    };
  pick = candidates:
    let found = builtins.filter (c: has c flake) candidates; in
    if found == [ ] then null
    else info (builtins.concatStringsSep "." (builtins.head found)) (get (builtins.head found) flake);
in
%(picks)s
"""


def _evaluate(
    source: _Flake, candidates: dict[str, dict[str, list[list[str]]]]
) -> dict[str, dict[str, dict | None]]:
    """One `nix eval` of `source` for {system: {install_id: candidates}}."""
    picks = (
        "{\n"
        + "".join(
            f"  {nix.nix_string(system)} = {{\n"
            + "".join(
                f"    {nix.nix_string(install_id)} = pick {_nix_list(paths)};\n"
                for install_id, paths in by_id.items()
            )
            + "  };\n"
            for system, by_id in candidates.items()
        )
        + "}"
    )
    expr = _EVAL % {"url": nix.nix_string(source.locked_url), "picks": picks}
    out = nix.run_nix(
        ["nix", *nix.base_options(), "eval", "--json", "--expr", expr],
        what=f"evaluating packages for {', '.join(candidates)} in {source.url}",
        hint="check the pkg-path / flake attribute names in [install]",
    )
    return json.loads(out)


def _nix_list(paths: list[list[str]]) -> str:
    return "[ " + " ".join("[ " + " ".join(map(nix.nix_string, p)) + " ]" for p in paths) + " ]"


def _pkg_path(d: InstallDescriptor) -> str:
    assert d.pkg_path is not None, "the model gives every catalog descriptor a pkg-path"
    return d.pkg_path


def _flake_ref(d: InstallDescriptor) -> str:
    assert d.flake is not None, "the model gives every flake descriptor its flake"
    return d.flake


def _catalog_candidates(pkg_path: str, system: str) -> list[list[str]]:
    parts = pkg_path.split(".")
    return [["legacyPackages", system, *parts], ["packages", system, *parts]]


def _flake_candidates(fragment: str, system: str) -> list[list[str]]:
    if not fragment:
        return [["packages", system, "default"], ["defaultPackage", system]]
    parts = fragment.split(".")
    return [["packages", system, *parts], ["legacyPackages", system, *parts], parts]


def _build(lock: Lock, system: str, packages: list[dict], warnings: list[str]) -> list[str]:
    """Build (or substitute) this system's derivations; check store-path entries exist."""
    drvs = sorted(
        {p["derivation"] for p in packages if p["system"] == system and "derivation" in p}
    )
    built: list[str] = []
    if drvs:
        out = nix.run_nix(
            ["nix-store", *nix.base_options(), "--realise", *drvs],
            what="building the locked packages",
        )
        built = sorted(line for line in out.splitlines() if line)
    store_paths = [p["store_path"] for p in packages if p["system"] == system and "store_path" in p]
    for path in nix.invalid_paths(store_paths, store_root=None):
        warnings.append(f"store path {path} is not in this machine's store; push will fail")
    return built


# --- lock entries (Flox lockfile v1 shapes) ----------------------------------------------


def _catalog_entry(
    descriptor: InstallDescriptor,
    found: dict | None,
    source: _Flake,
    system: str,
    warnings: list[str],
) -> dict[str, Any]:
    if found is None:
        raise LockError(
            f"install.{descriptor.install_id}: pkg-path {descriptor.pkg_path!r} is not in "
            f"catalog {source.url} for {system}",
            hint=f"check the name, or restrict it: {descriptor.install_id}.systems = [...]",
        )
    _check_version(descriptor, found, warnings)
    locked = source.metadata.get("locked", {})
    last_modified = source.metadata.get("lastModified") or locked.get("lastModified") or 0
    date = datetime.fromtimestamp(last_modified, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "attr_path": descriptor.pkg_path,
        "broken": found["broken"],
        "derivation": found["drvPath"],
        "description": found["description"],
        "group": descriptor.pkg_group or DEFAULT_GROUP,
        "install_id": descriptor.install_id,
        "license": found["license"],
        "locked_url": source.locked_url,
        "name": found["name"],
        "outputs": found["outputs"],
        "outputs_to_install": _outputs_to_install(found),
        "pname": found["pname"],
        "priority": descriptor.priority,
        "rev": locked.get("rev") or locked.get("narHash", ""),
        "rev_count": locked.get("revCount", 0),
        "rev_date": date,
        "scrape_date": date,  # deterministic: the same catalog gives the same lock
        "stabilities": [],
        "system": system,
        "unfree": found["unfree"],
        "version": found["version"],
    }


def _flake_entry(
    descriptor: InstallDescriptor, found: dict | None, source: _Flake, system: str
) -> dict[str, Any]:
    if found is None:
        raise LockError(
            f"install.{descriptor.install_id}: flake {descriptor.flake!r} has no package "
            f"for {system}",
            hint='name the package: flake = "URL#attr"',
        )
    requested = descriptor.outputs if isinstance(descriptor.outputs, list) else []
    return {
        "install_id": descriptor.install_id,
        "locked-url": source.locked_url,
        "flake-description": source.metadata.get("description"),
        "locked-flake-attr-path": found["attrPath"],
        "derivation": found["drvPath"],
        "outputs": found["outputs"],
        "output-names": list(found["outputs"]),
        "outputs-to-install": _outputs_to_install(found),
        "requested-outputs-to-install": requested,
        "package-system": system,
        "system": system,
        "name": found["name"],
        "pname": found["pname"],
        "version": found["version"],
        "broken": found["broken"],
        "unfree": found["unfree"],
        "priority": descriptor.priority,
    }


def _outputs_to_install(found: dict) -> list[str]:
    declared = [o for o in found["outputsToInstall"] or [] if o in found["outputs"]]
    if declared:
        return declared
    return ["out"] if "out" in found["outputs"] else sorted(found["outputs"])[:1]


def _check_version(descriptor: InstallDescriptor, found: dict, warnings: list[str]) -> None:
    wanted, have = descriptor.version, found["version"]
    if not wanted:
        return
    if wanted[0] in "^~<>=*":
        warnings.append(
            f"install.{descriptor.install_id}.version {wanted!r}: ranges are not checked by "
            f"floxk; the catalog has {have}"
        )
        return
    if have != wanted and not (have or "").startswith(wanted + "."):
        raise LockError(
            f"install.{descriptor.install_id}: version {wanted!r} requested, the catalog has "
            f"{found['pname']} {have}",
            hint="change or drop the version, or use a catalog that has it",
        )
