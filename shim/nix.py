"""How floxk calls Nix: command lines shared by lock, push, realize and gc.

Standard library only. Every call goes through shim.proc.run; this module only builds
argument lists and reads Nix's output. Options are passed per call (`--option NAME VALUE`),
never written to nix.conf, so a node's own Nix configuration is left alone.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from shim.errors import CommandError, MissingDependencyError, NixError
from shim.proc import run

STORE_DIR = "/nix/store"

# "copying path '/nix/store/...' from 'file:///cache'..." (Nix 2.8 .. 2.3x, on stderr).
_COPIED_FROM = re.compile(r"copying path '(/nix/store/[^']+)' from '([^']+)'")


def option(name: str, value: str) -> list[str]:
    return ["--option", name, value]


def base_options() -> list[str]:
    """Options every call needs on this host.

    Root without a `nixbld` group (a bare Debian nix-bin, a kind node) cannot build or even
    open the store with the default build-users-group; building as root is what a
    single-user install does anyway.
    """
    if os.geteuid() == 0 and not _group_exists("nixbld"):
        return option("build-users-group", "")
    return []


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def store_args(store_root: Path | None) -> list[str]:
    """`--store ROOT` for a chroot store (files under ROOT/nix/store), nothing for the host's."""
    return ["--store", str(store_root)] if store_root is not None else []


def substitution_options(
    substituters: Sequence[str], trusted_keys: Sequence[str], *, check_signatures: bool = True
) -> list[str]:
    """Use exactly these caches and keys, nothing from nix.conf, and no stale narinfo cache.

    Nix remembers narinfo lookups (missing ones for an hour by default) in ~/.cache; a path
    pushed a minute ago must not look missing, so both TTLs are 0 here.
    """
    return [
        *option("substituters", " ".join(substituters)),
        *option("trusted-public-keys", " ".join(trusted_keys)),
        *option("require-sigs", "true" if check_signatures else "false"),
        *option("narinfo-cache-negative-ttl", "0"),
        *option("narinfo-cache-positive-ttl", "0"),
        *option("connect-timeout", "15"),
    ]


def no_substituters() -> list[str]:
    """For local builds and evaluation: never reach out to a cache configured in nix.conf."""
    return option("substituters", "")


def copied_from(output: str) -> list[tuple[str, str]]:
    """(store path, substituter) for each path Nix reports it copied in from a cache."""
    return _COPIED_FROM.findall(output)


def nix_string(value: str) -> str:
    """A Nix string literal for `value` (JSON escapes are Nix escapes, plus `${`)."""
    return json.dumps(value).replace("${", "\\${")


def is_store_path(value: str) -> bool:
    return value.startswith(STORE_DIR + "/") and "/" not in value[len(STORE_DIR) + 1 :]


def run_nix(
    argv: Sequence[str], *, what: str, hint: str | None = None, timeout: float | None = None
) -> str:
    """Run a Nix command; a failure becomes a NixError saying what floxk was doing.

    Returns stdout; Nix's progress (stderr) is kept in the error when it fails.
    """
    try:
        return run(list(argv), timeout=timeout, hint=hint)
    except CommandError as e:
        raise NixError(f"{what} failed:\n{_tail(e.output)}", hint=hint) from None


def run_nix_with_log(argv: Sequence[str], *, what: str, hint: str | None = None) -> tuple[str, str]:
    """Like run_nix, but also returns stderr (where Nix reports copied paths)."""
    argv = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise MissingDependencyError(
            f"{argv[0]} is not installed", hint="install Nix (Debian: nix-bin)"
        ) from None
    if proc.returncode != 0:
        raise NixError(f"{what} failed:\n{_tail(proc.stdout + proc.stderr)}", hint=hint)
    return proc.stdout, proc.stderr


def _tail(output: str, lines: int = 25) -> str:
    kept = [
        line
        for line in output.strip().splitlines()
        if "specified in 'build-users-group'" not in line
    ]
    return "\n".join(kept[-lines:])


def closure(paths: Iterable[str], *, store_root: Path | None) -> list[str]:
    """All store paths `paths` need at run time (nix-store -qR), sorted.

    Reads the store's database directly when it can (a few ms instead of another Nix
    process on every cold realization); falls back to `nix-store -qR` if that fails.
    """
    paths = sorted(set(paths))
    if not paths:
        return []
    found = _closure_from_db(paths, store_root)
    if found is not None:
        return found
    out = run_nix(
        ["nix-store", *base_options(), *store_args(store_root), "--query", "--requisites", *paths],
        what="computing the closure",
    )
    return sorted(line for line in out.splitlines() if line)


# ValidPaths(id, path, ...) and Refs(referrer, reference): Nix's schema since 1.x.
_CLOSURE_SQL = """
WITH RECURSIVE closure(id) AS (
  SELECT id FROM ValidPaths WHERE path IN ({marks})
  UNION SELECT Refs.reference FROM Refs JOIN closure ON Refs.referrer = closure.id
)
SELECT path FROM ValidPaths JOIN closure USING (id)
"""


def _closure_from_db(paths: list[str], store_root: Path | None) -> list[str] | None:
    db = (store_root or Path("/")) / "nix" / "var" / "nix" / "db" / "db.sqlite"
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            con.execute("PRAGMA busy_timeout = 5000")
            rows = con.execute(
                _CLOSURE_SQL.format(marks=",".join("?" * len(paths))), paths
            ).fetchall()
    except sqlite3.Error:
        return None
    found = sorted({row[0] for row in rows})
    if not set(paths) <= set(found):  # not all valid: let Nix say why
        return None
    return found


def invalid_paths(paths: Iterable[str], *, store_root: Path | None) -> list[str]:
    """The subset of `paths` that is not valid (present and registered) in the store."""
    paths = list(paths)
    if not paths:
        return []
    out = run_nix(
        [
            "nix-store",
            *base_options(),
            *store_args(store_root),
            "--check-validity",
            "--print-invalid",
            *paths,
        ],
        what="checking store paths",
    )
    return [line for line in out.splitlines() if line]


def gcroots_dir(store_root: Path | None) -> Path:
    """Where the store's GC looks for roots (symlinks to logical /nix/store paths)."""
    return (store_root or Path("/")) / "nix" / "var" / "nix" / "gcroots"
