"""The Nix store's SQLite database, read directly (read-only): what Nix would print, without
a Nix process.

Each reader returns None when the database cannot tell (no database, a path it does not
hold as valid, an info without its NAR size); shim.core.nix then asks Nix, which says
what is wrong. A few ms instead of another Nix process on every cold realization, record,
push and lock. Standard library only.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

STORE_DIR = "/nix/store"

# ValidPaths(id, path, ...) and Refs(referrer, reference): Nix's schema since 1.x.
_CLOSURE_SQL = """
WITH RECURSIVE closure(id) AS (
  SELECT id FROM ValidPaths WHERE path IN ({marks})
  UNION SELECT Refs.reference FROM Refs JOIN closure ON Refs.referrer = closure.id
)
SELECT path FROM ValidPaths JOIN closure USING (id)
"""
# The closure's ids, then each path's info and its references (hash is "sha256:<base16>",
# sigs space-separated).
_INFOS_SQL = (
    _CLOSURE_SQL.replace("SELECT path FROM", "SELECT id, path, hash, narSize, sigs FROM"),
    "SELECT Refs.referrer, ValidPaths.path FROM Refs JOIN ValidPaths"
    " ON ValidPaths.id = Refs.reference WHERE Refs.referrer IN ({ids})",
)


def is_store_path(value: str) -> bool:
    return value.startswith(STORE_DIR + "/") and "/" not in value[len(STORE_DIR) + 1 :]


def _marks(values: list) -> str:
    return ",".join("?" * len(values))


@contextlib.contextmanager
def _connect(store_root: str | Path | None) -> Iterator[sqlite3.Connection]:
    """The store's database, read-only, waiting up to 5 s for a writer (sqlite3.Error when
    it cannot be opened)."""
    db = Path(store_root or "/") / "nix" / "var" / "nix" / "db" / "db.sqlite"
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        con.execute("PRAGMA busy_timeout = 5000")
        yield con


def closure(paths: list[str], store_root: str | Path | None) -> list[str] | None:
    """The closure of `paths` (sorted), None unless all of them are valid."""
    try:
        with _connect(store_root) as con:
            rows = con.execute(_CLOSURE_SQL.format(marks=_marks(paths)), paths).fetchall()
    except sqlite3.Error:
        return None
    found = sorted({row[0] for row in rows})
    if not set(paths) <= set(found):  # not all valid: let Nix say why
        return None
    return found


def valid_paths(paths: list[str], store_root: str | Path | None) -> set[str] | None:
    """Which of `paths` have a row in the store's ValidPaths (what makes a path valid to
    Nix); None when one is no store path or the database cannot be read."""
    if not all(is_store_path(p) for p in paths):
        return None  # let Nix say what is wrong with it
    try:
        with _connect(store_root) as con:
            sql = f"SELECT path FROM ValidPaths WHERE path IN ({_marks(paths)})"
            rows = con.execute(sql, paths).fetchall()
    except sqlite3.Error:
        return None
    return {row[0] for row in rows}


def path_infos(paths: list[str], store_root: str | Path | None) -> dict[str, dict] | None:
    """{path: info} for the closure of `paths`, as shim.core.nix.path_infos gives it (narHash,
    narSize, references sorted, signatures); None when the database cannot tell."""
    if not paths:
        return {}
    try:
        with _connect(store_root) as con:
            with con:  # one read transaction: the infos and references agree
                rows = con.execute(_INFOS_SQL[0].format(marks=_marks(paths)), paths).fetchall()
                ids = {row[0]: row[1] for row in rows}
                sql = _INFOS_SQL[1].format(ids=_marks(list(ids)))
                refs = con.execute(sql, list(ids)).fetchall()
    except sqlite3.Error:
        return None
    infos: dict[str, dict] = {}
    for _, path, nar_hash, nar_size, sigs in rows:
        if not nar_hash or nar_size is None or not is_store_path(path):
            return None
        infos[path] = {
            "path": path, "narHash": nar_hash, "narSize": nar_size, "references": [],
            "signatures": (sigs or "").split(),
        }  # fmt: skip
    for referrer, reference in refs:
        infos[ids[referrer]]["references"].append(reference)
    if not set(paths) <= set(infos):
        return None
    for info in infos.values():
        info["references"].sort()
    return infos
