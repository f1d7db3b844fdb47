"""`floxk env push`: publish a locked environment to a binary cache and its hub.

1. `nix copy` the closure of every locked system's install paths to the cache (paths for
   another system that this machine never built are skipped and reported);
2. sign them there with the given key (`nix store sign`, so paths already in the cache
   unsigned get the signature too);
3. under the hub's lock, pick the next generation N, add its record (owner, name, N, lock
   digest, created, lock) to the cache as a store path (`nix store add-file`) and sign it
   with the same key; then write the pointer `<cache>/floxk/envs/OWNER/NAME/<N>.json`
   (never overwritten) naming that store path, then `latest`.
Only file:// caches are written; nodes read hubs over file:// and http(s)://.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shim.core import hub, nix
from shim.core.errors import FloxkError, NixError
from shim.core.model import Lock, current_system, load_lock


@dataclass
class PushResult:
    ref: str  # OWNER/NAME:GEN
    generation: int
    digest: str
    record_url: str
    cache_url: str
    signed: bool
    paths: list[str]  # install paths pushed (their closures went along)
    skipped_systems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def push_environment(
    directory: Path, *, to: str, name: str, signing_key: Path | None = None
) -> PushResult:
    directory = Path(directory)
    lock = load_lock(directory / "manifest.lock")
    owner, env_name, generation = hub.parse_ref(name)
    if generation is not None:
        raise FloxkError(
            f"--name {name!r} names a generation", hint="push picks the next generation itself"
        )
    cache_dir = _local_cache_dir(to)
    if signing_key is not None and not Path(signing_key).is_file():
        raise FloxkError(f"signing key {signing_key} does not exist")

    paths, skipped, warnings = _pushable_paths(lock)
    cache_url = "file://" + urllib.parse.quote(str(cache_dir))
    if paths:
        copy_url = cache_url + "?compression=zstd"
        nix.run_nix(
            ["nix", *nix.base_options(), "copy", "--to", copy_url, *paths],
            what=f"copying the closure to {cache_url}",
        )
        if signing_key is not None:
            nix.run_nix(
                ["nix", *nix.base_options(), "store", "sign", "--store", cache_url]
                + ["--key-file", str(signing_key), "--recursive", *paths],
                what=f"signing the closure in {cache_url}",
            )
    if signing_key is None:
        warnings.append("pushed unsigned: nodes check signatures and will refuse these paths")

    generation = _write_record(cache_dir, owner, env_name, lock, signing_key=signing_key)
    record_url = cache_url.rstrip("/") + "/" + hub.record_path(owner, env_name, generation)
    return PushResult(
        ref=f"{owner}/{env_name}:{generation}",
        generation=generation,
        digest=lock.digest(),
        record_url=record_url,
        cache_url=cache_url,
        signed=signing_key is not None,
        paths=paths,
        skipped_systems=skipped,
        warnings=warnings,
    )


def _local_cache_dir(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "file" or parts.query:
        raise FloxkError(
            f"cannot push to {url!r}: only file:// binary caches are written by floxk",
            hint="push to file:///some/dir and serve that directory over http(s) for nodes",
        )
    path = Path(urllib.parse.unquote(parts.path))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _pushable_paths(lock: Lock) -> tuple[list[str], list[str], list[str]]:
    """Install paths of every system; another system's paths are skipped when not built here."""
    here = current_system()
    by_system: dict[str, list[str]] = {}
    for package in lock.packages:
        by_system.setdefault(package.system, []).extend(package.install_paths())
    paths, skipped, warnings = [], [], []
    for system, system_paths in sorted(by_system.items()):
        missing = nix.invalid_paths(system_paths, store_root=None)
        if missing and system == here:
            raise NixError(
                f"{len(missing)} locked path(s) for {system} are not in this machine's store: "
                + ", ".join(missing[:3]),
                hint="run `floxk env lock DIR` (it builds what it locks), then push again",
            )
        if missing:
            skipped.append(system)
            warnings.append(f"{system}: not built on this machine, not pushed")
            continue
        paths.extend(system_paths)
    return sorted(set(paths)), skipped, warnings


def _write_record(
    cache_dir: Path, owner: str, name: str, lock: Lock, *, signing_key: Path | None
) -> int:
    """Add generation N+1's signed record to the cache, then its pointer, then move `latest`.
    Concurrent pushes get distinct generations: the pointer is hard-linked into place,
    which fails if the name exists (its record then names a generation nobody points at)."""
    directory = cache_dir / hub.env_dir(owner, name)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / ".lock"):
        generation = _latest(directory) + 1
        while True:
            record = hub.make_record(
                owner, name, generation, lock, created=datetime.now(UTC).isoformat()
            )
            store_path = _add_record(cache_dir, record, signing_key)
            pointer = hub.make_pointer(owner, name, generation, store_path)
            tmp = _temp_file(directory, json.dumps(pointer, indent=2, sort_keys=True) + "\n")
            try:
                os.link(tmp, directory / f"{generation}.json")
                break
            except FileExistsError:
                generation += 1
            finally:
                os.unlink(tmp)
        os.replace(_temp_file(directory, f"{generation}\n"), directory / "latest")
    return generation


def _add_record(cache_dir: Path, record: dict, signing_key: Path | None) -> str:
    """The record as a store path in the cache (a flat file), signed there with the key:
    nodes check that signature with Nix, like the closure's."""
    cache_url = "file://" + urllib.parse.quote(str(cache_dir))
    name = hub.record_store_name(record["owner"], record["name"], record["generation"])
    with tempfile.TemporaryDirectory(prefix="floxk-record-") as tmp:
        file = Path(tmp) / name
        file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        out = nix.run_nix(
            ["nix", *nix.base_options(), *nix.option("extra-experimental-features", "nix-command"),
             "store", "add-file", "--store", cache_url + "?compression=zstd",
             "--name", name, str(file)],
            what=f"adding the record to {cache_url}",
        )  # fmt: skip
    store_path = out.strip().splitlines()[-1] if out.strip() else ""
    if not nix.is_store_path(store_path):
        raise NixError(f"nix store add-file printed no store path: {out!r}")
    if signing_key is not None:
        nix.run_nix(
            ["nix", *nix.base_options(), "store", "sign", "--store", cache_url,
             "--key-file", str(signing_key), store_path],
            what=f"signing the record in {cache_url}",
        )  # fmt: skip
    return store_path


def _latest(directory: Path) -> int:
    numbers = [int(p.stem) for p in directory.glob("*.json") if p.stem.isdigit()]
    return max(numbers, default=0)


def _temp_file(directory: Path, text: str) -> str:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    return tmp


@contextlib.contextmanager
def _locked(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
