"""Realize a locked environment on a node: closure from signed caches, then one immutable tree.

    state_dir/
      envs/<digest>/          the environment tree: bin/, lib/, share/ ... symlinks into
                              /nix/store (logical paths), and activation.json
      locks/<digest>.lock     single-flight: one realization per digest at a time
      locks/gc.lock           shared while paths are substituted and rooted, exclusive in gc
      tmp/<digest>.XXXX/      a tree being built; renamed into envs/ when complete
      realize.log             one line per substituted path, refused path and tree built
      records/, seen/         verified records and generations used (shim.core.hub)

Nothing is built: Nix runs with no nix.conf and no way to build (shim.core.nix.node_options;
substitution takes plain output paths only, shim.core.nix.substitute), and
after substitution every path of the closure, content-addressed or not, must carry a
signature by a trusted key (shim.core.signatures.verified_closure) before a tree is built
from it.

A tree is complete once visible: it is built in tmp/, activation.json is written last, and
only then is the directory renamed into envs/. The warm path is therefore one read of
envs/<digest>/activation.json. GC roots (one per installed path, in the store's
gcroots/floxk/<digest>/) keep the closure alive for as long as the tree exists.

The tree itself (merging package trees, reading its links) is shim.core.tree.
Standard library only (runs on nodes).
"""

from __future__ import annotations

import _signal  # signal's C half, loaded at interpreter start (signal itself imports enum)
import fcntl
import os
import time

from shim.core import fastjson
from shim.core.errors import NixError, RealizeError
from shim.core.records import record

# floxk-runc imports this module on every container create, and a warm environment needs
# only ready(): what building a tree needs (Nix, subprocess, sqlite3, shutil...) is imported
# in the functions that build one.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from shim.core.lockfile import Lock

ACTIVATION = "activation.json"
ROOTS_SUBDIR = "floxk"


@record(frozen=True)
class RealizedEnv:
    digest: str
    path: str | Path  # state_dir/envs/<digest>; a str from find_ready()
    activation: dict


def env_path(state_dir: str | Path, digest: str) -> Path:
    from pathlib import Path  # not at the top: see find_ready()

    return Path(state_dir) / "envs" / digest


def roots_dir(store_root: Path | None, digest: str) -> Path:
    from shim.core import nix

    return nix.gcroots_dir(store_root) / ROOTS_SUBDIR / digest


def realize(
    lock: Lock,
    *,
    system: str,
    substituters: list[str],
    trusted_keys: list[str],
    store_root: str | Path | None,
    state_dir: str | Path,
    insecure_accept_unsigned: bool = False,
    phases: dict | None = None,
    access=None,
) -> RealizedEnv:
    """Make the environment of `lock` present on this node and return its tree.

    Signatures are always checked against `trusted_keys`, for every path of the closure
    (TrustError names the ones without). Unsigned paths are accepted only when the caller
    passes no keys at all AND insecure_accept_unsigned=True. The lock itself must come
    from a verified record (shim.core.service.fetch_for) or from the caller's own directory.
    `phases`, when given, gets the milliseconds of substitute, verify and tree if this call
    built the tree. `access` (shim.core.auth.Access): the tokens of private caches.
    """
    from pathlib import Path

    state_dir = Path(state_dir)
    store_root = Path(store_root) if store_root is not None else None  # node.toml gives str
    digest = lock.digest()
    found = ready(state_dir, digest)
    if found is not None:
        return found
    import tempfile

    from shim.core import nix
    from shim.core.tree import build_tree

    packages = lock.packages_for(system)
    check_signatures = bool(trusted_keys) or not insecure_accept_unsigned
    if check_signatures and not trusted_keys:
        raise RealizeError(
            "no trusted public keys are configured, so no store path can be accepted",
            hint="set trusted_public_keys in the node configuration (or pass --trusted-key)",
        )
    with file_lock(state_dir / "locks" / f"{digest}.lock"):
        found = ready(state_dir, digest)  # another process may have finished meanwhile
        if found is not None:
            return found
        _remove_stale(state_dir, digest)
        entries = [
            (p.priority, i, p.install_id, path)
            for i, p in enumerate(packages)
            for path in p.install_paths()
        ]
        install_paths = list(dict.fromkeys(path for *_, path in entries))
        ms, mark = phases if phases is not None else {}, time.monotonic()
        with file_lock(state_dir / "locks" / "gc.lock", shared=True):
            substituted = _substitute(
                install_paths,
                substituters=substituters,
                trusted_keys=trusted_keys,
                check_signatures=check_signatures,
                store_root=store_root,
                state_dir=state_dir,
                digest=digest,
                access=access,
            )
            ms["substitute"], mark = _ms(mark), time.monotonic()
            if check_signatures:
                closure = _verified_closure(
                    install_paths, trusted_keys, substituters=substituters,
                    store_root=store_root, state_dir=state_dir, digest=digest,
                    substituted=substituted, access=access,
                )  # fmt: skip
            else:
                closure = nix.closure(install_paths, store_root=store_root)
            _write_roots(store_root, digest, install_paths)
        ms["verify"], mark = _ms(mark), time.monotonic()
        activation = {
            "digest": digest,
            "system": system,
            "vars": dict(lock.manifest.vars),
            "hook": lock.manifest.hook_on_activate,
            "profile": lock.manifest.profile.get("common"),
            "activate_mode": lock.manifest.activate_mode,
            "packages": install_paths,
            "closure": closure,
        }
        (state_dir / "tmp").mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=state_dir / "tmp", prefix=f"{digest}."))
        build_tree(building, entries, store_root=store_root)
        _write_json(building / ACTIVATION, activation)
        target = env_path(state_dir, digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(building, 0o755)
        os.rename(building, target)
        ms["tree"] = _ms(mark)
        log(state_dir, "tree", digest, str(target))
    return RealizedEnv(digest, target, activation)


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


def ready(state_dir: str | Path, digest: str) -> RealizedEnv | None:
    """find_ready() with the tree's path as a Path."""
    found = find_ready(state_dir, digest)
    if found is None:
        return None
    return RealizedEnv(found.digest, env_path(state_dir, digest), found.activation)


def find_ready(state_dir: str | os.PathLike[str], digest: str) -> RealizedEnv | None:
    """The warm path: a complete tree is one whose activation.json exists (written last).

    The result's path is a str: floxk-runc calls this on every create, and importing
    pathlib (re, fnmatch, urllib...) would cost milliseconds there."""
    path = os.path.join(state_dir, "envs", digest)
    try:
        with open(os.path.join(path, ACTIVATION), "rb") as f:
            activation = fastjson.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable: rebuilt under the lock
    if activation.get("digest") != digest:
        return None
    return RealizedEnv(digest, path, activation)


def abandon(state_dir: str | Path, store_root: str | Path | None, digest: str) -> list[str]:
    """Take back what a realization of `digest` that did not finish (past its deadline,
    killed) left: its temporary trees and, when no complete tree exists, its GC roots (the
    store paths it fetched are then unrooted: GC's). Nothing when a realization of it is
    running right now (its lock is held). Returns what was removed."""
    import shutil
    from pathlib import Path

    from shim.core.gc import _try_flock

    state_dir = Path(state_dir)
    store_root = Path(store_root) if store_root is not None else None
    removed: list[str] = []
    with _try_flock(state_dir / "locks" / f"{digest}.lock") as free:
        if not free:
            return removed
        tmp = state_dir / "tmp"
        for leftover in sorted(tmp.glob(f"{digest}.*")) if tmp.is_dir() else []:
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(str(leftover))
        roots = roots_dir(store_root, digest)
        if not env_path(state_dir, digest).exists() and roots.exists():
            shutil.rmtree(roots, ignore_errors=True)
            removed.append(str(roots))
    return removed


class RealizeTimeout(BaseException):
    """Raised by deadline's SIGALRM handler: a BaseException, so no `except Exception` on
    the way (a cache lookup, a best-effort cleanup) swallows it."""


class deadline:  # noqa: N801 -- used like a function: `with deadline(300, ...):`
    """Bound the block to `seconds` of wall time (SIGALRM; main thread only). On expiry the
    running child process group is killed (shim.core.proc) and a RealizeError with `message`
    and `hint` leaves the block. `_signal`, not `signal`: the latter imports enum, and this
    is armed on every container create."""

    def __init__(self, seconds: float, message: str, hint: str | None = None) -> None:
        self.seconds, self.message, self.hint, self.previous = seconds, message, hint, None
        # called after expiry (e.g. abandon() once the digest is known)
        self.cleanup: Callable[[], None] | None = None

    def __enter__(self) -> deadline:
        self.previous = _signal.signal(_signal.SIGALRM, _expired)
        _signal.setitimer(_signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, kind, value, tb) -> None:
        try:
            _signal.setitimer(_signal.ITIMER_REAL, 0)  # an armed timer survives runc's exec
        except RealizeTimeout:  # fired on the way out
            kind = RealizeTimeout
        _signal.signal(_signal.SIGALRM, self.previous)
        if kind is RealizeTimeout:
            if self.cleanup is not None:
                self.cleanup()
            raise RealizeError(self.message, hint=self.hint) from None


def _expired(signum, frame) -> None:
    raise RealizeTimeout()


def _remove_stale(state_dir: Path, digest: str) -> None:
    """Leftovers of a realizer that died: half-built trees, or a damaged tree. Lock held."""
    import shutil

    tmp = state_dir / "tmp"
    if tmp.is_dir():
        for leftover in tmp.glob(f"{digest}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
    target = env_path(state_dir, digest)
    if target.exists() or target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)


def _substitute(
    paths: list[str],
    *,
    substituters: list[str],
    trusted_keys: list[str],
    check_signatures: bool,
    store_root: Path | None,
    state_dir: Path,
    digest: str,
    access=None,
) -> set[str]:
    """Fetch the closure of `paths` into the store from the substituters (shim.core.nix.
    substitute); the paths it copied in."""
    if not paths:
        return set()
    from shim.core import nix

    if store_root is not None:
        os.makedirs(store_root, exist_ok=True)
    try:
        with nix.credentials(access, substituters) as auth_options:
            progress = nix.substitute(
                paths,
                substituters=substituters,
                trusted_keys=trusted_keys,
                check_signatures=check_signatures,
                store_root=store_root,
                extra=auth_options,
                what="fetching the environment's closure from "
                f"{', '.join(substituters) or '(none)'}",
            )
    except NixError as e:
        raise RealizeError(e.message, hint=_why_not_substituted(e.message)) from None
    copied = nix.copied_from(progress)
    for path, source in copied:
        log(state_dir, "substitute", digest, f"{path} {source}")
    return {path for path, _ in copied}


def _verified_closure(
    paths: list[str],
    trusted_keys: list[str],
    *,
    substituters: list[str],
    store_root: Path | None,
    state_dir: Path,
    digest: str,
    substituted: set[str],
    access=None,
) -> list[str]:
    """The closure of `paths`, every path of it signed by a trusted key (shim.core.signatures), or a
    TrustError. Refused paths this realization copied in are deleted from the store again
    (best effort), so none stays behind looking valid; what the store had before is left."""
    from shim.core import nix
    from shim.core.errors import TrustError
    from shim.core.signatures import verified_closure

    try:
        return verified_closure(
            paths, trusted_keys, store_root=store_root, substituters=substituters, access=access
        )
    except TrustError as e:
        log(state_dir, "refused", digest, " ".join(e.paths))
        nix.delete_paths([p for p in e.paths if p in substituted], store_root=store_root)
        raise


def _why_not_substituted(output: str) -> str:
    """The likely cause, from what Nix said (wording as of Nix 2.8 .. 2.3x)."""
    if "not signed by any of the keys" in output or "does not have a valid signature" in output:
        return (
            "a cache has the path but not signed by a trusted key: check trusted_public_keys "
            "and that the environment was pushed with --signing-key"
        )
    if any(
        sign in output
        for sign in ("unable to start any build", "--max-jobs", "is required to build",
                     "nodes never build")
    ):  # fmt: skip
        return (
            "the lock names something only a build can make, and nodes never build: "
            "lock and push the environment again (`floxk env push` uploads built outputs)"
        )
    if "copying path" not in output and (
        "don't know how to build" in output or "no substituter" in output
    ):
        return (
            "no substituter has these paths: push the environment (`floxk env push`) to a "
            "cache listed in the node's substituters"
        )
    return "the cache's copy could not be imported (damaged or tampered with): push it again"


def _write_roots(store_root: Path | None, digest: str, paths: list[str]) -> None:
    """One GC root per installed path; their closures stay alive through references."""
    directory = roots_dir(store_root, digest)
    directory.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = directory / os.path.basename(path)
        if not link.is_symlink():
            os.symlink(path, link)


# --- small helpers ------------------------------------------------------------------------


class file_lock:  # noqa: N801 -- used like a function: `with file_lock(path):`
    """Hold an fcntl lock on `path` (created if missing); released when the process dies.

    A class, not @contextlib.contextmanager: contextlib's import costs time on every create."""

    def __init__(self, path: str | Path, *, shared: bool = False) -> None:
        self.path, self.shared, self.fd = path, shared, -1

    def __enter__(self) -> None:
        os.makedirs(os.path.dirname(os.fspath(self.path)), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        import json  # indented: only when a tree is built

        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def log(state_dir: Path, event: str, digest: str, detail: str = "") -> None:
    """Append one line to state_dir/realize.log (one write: lines never interleave)."""
    line = f"{time.time():.3f} {os.getpid()} {event} {digest} {detail}".rstrip() + "\n"
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "realize.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
