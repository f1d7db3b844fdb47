"""Who uses which environment tree, and freeing what nobody uses.

    state_dir/uses/<digest>/<container_id>   holds the container's bundle path

A use is live while its bundle directory exists (containerd removes the bundle when the
container is deleted), so a crashed runtime cannot pin an environment forever. Call
mark_in_use() BEFORE realize() for a container: then gc can never free a tree between
realization and use.

collect() frees trees without live users (with their GC roots), then runs Nix's GC:
`nix-store --gc` on a chroot store (floxk owns it), and on the host's own store only a
targeted `nix-store --delete` of the freed environments' paths that nothing else keeps alive.

When to collect on its own (disk pressure, after a cold realization) is shim.core.pressure.
Standard library only (runs on nodes).
"""

from __future__ import annotations

import fcntl
import os

from shim.core import storeview
from shim.core.atomic import write_atomic
from shim.core.errors import NixError, RealizeError
from shim.core.names import dollar_end, is_name
from shim.core.realize import ACTIVATION, ROOTS_SUBDIR, env_path, file_lock, roots_dir

# mark_in_use() runs on every container create: Nix, shutil and tempfile are imported by
# the collection functions that need them, not here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

# Checked with str methods (no `re` on the create path: shim.core.names), equivalent to
#   container id  ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$      digest  ^[0-9a-f]{64}$
_MAX_ID = 128
_HEX = frozenset("0123456789abcdef")


# mark_in_use() and release() run on every create and delete: os.path, not pathlib (whose
# import pulls in re, fnmatch and urllib).
def mark_in_use(state_dir: str | Path, digest: str, container_id: str, bundle: str | Path) -> None:
    """Record that `container_id` (whose bundle is `bundle`) uses the tree of `digest`."""
    _check_digest(digest)
    _check_id(container_id)
    directory = os.path.join(state_dir, "uses", digest)
    os.makedirs(directory, exist_ok=True)
    write_atomic(os.path.join(directory, container_id), os.fsencode(bundle), 0o600)


def release(state_dir: str | Path, container_id: str) -> None:
    """Forget every use by `container_id` (idempotent)."""
    _check_id(container_id)
    uses = os.path.join(state_dir, "uses")
    try:
        digests = os.listdir(uses)
    except FileNotFoundError:
        return
    for digest in digests:
        try:
            os.unlink(os.path.join(uses, digest, container_id))
        except (FileNotFoundError, NotADirectoryError):
            pass


def live_users(state_dir: Path, digest: str, *, prune: bool = False) -> list[str]:
    """Container ids using `digest` whose bundle still exists; prune=True drops the others."""
    from pathlib import Path

    users = []
    directory = Path(state_dir) / "uses" / digest
    for use in sorted(directory.glob("*")) if directory.is_dir() else []:
        if use.name.startswith("."):
            continue
        try:
            bundle = use.read_text()
        except FileNotFoundError:
            continue
        if os.path.isdir(bundle):
            users.append(use.name)
        elif prune:
            use.unlink(missing_ok=True)
    return users


def collect(*, state_dir: str | Path, store_root: str | Path | None, dry_run: bool = False) -> dict:
    """Free trees no live container uses, then garbage-collect the store.

    Returns {"freed_envs": [digest], "kept_envs": {digest: [container ids]},
    "store_paths_deleted": [path], "mib_freed": float, "dry_run": bool}.
    """
    from pathlib import Path

    state_dir = Path(state_dir)
    store_root = Path(store_root) if store_root is not None else None  # node.toml gives str
    freed, kept, candidates = [], {}, set()
    with file_lock(state_dir / "locks" / "gc.lock"):
        envs = state_dir / "envs"
        for env in sorted(envs.iterdir()) if envs.is_dir() else []:
            digest = env.name
            users = live_users(state_dir, digest, prune=not dry_run)
            if users:
                kept[digest] = users
                continue
            with _try_flock(state_dir / "locks" / f"{digest}.lock") as free:
                if not free:  # being realized right now: someone is about to use it
                    kept[digest] = []
                    continue
                users = live_users(state_dir, digest)  # again under the lock (a create's barrier)
                if users:
                    kept[digest] = users
                    continue
                candidates.update(_closure_of(env))
                if not dry_run:
                    _remove_env(state_dir, store_root, digest)
            freed.append(digest)
        if not dry_run:
            _remove_orphans(state_dir, store_root)
        if dry_run:
            deleted, mib = _would_delete(store_root, sorted(candidates), freed), 0.0
        else:
            deleted, mib = _store_gc(store_root, sorted(candidates))
    return {
        "freed_envs": freed,
        "kept_envs": kept,
        "store_paths_deleted": deleted,
        "mib_freed": mib,
        "dry_run": dry_run,
    }


def _closure_of(env: Path) -> list[str]:
    try:
        import json

        return list(json.loads((env / ACTIVATION).read_text()).get("closure", []))
    except (OSError, ValueError):
        return []


def _remove_env(state_dir: Path, store_root: Path | None, digest: str) -> None:
    """Take the tree out of envs/ in one rename, then delete it, its roots and use records."""
    import shutil
    import tempfile
    from pathlib import Path

    env = env_path(state_dir, digest)
    (state_dir / "tmp").mkdir(parents=True, exist_ok=True)
    trash = Path(tempfile.mkdtemp(dir=state_dir / "tmp", prefix=f"gc-{digest}."))
    os.rename(env, trash / "env")
    shutil.rmtree(trash, ignore_errors=True)
    storeview.remove(str(state_dir), digest)
    shutil.rmtree(roots_dir(store_root, digest), ignore_errors=True)
    shutil.rmtree(state_dir / "uses" / digest, ignore_errors=True)


def _remove_orphans(state_dir: Path, store_root: Path | None) -> None:
    """Roots and half-built trees left by a realization that died (its lock is free)."""
    import shutil

    from shim.core import nix

    roots = nix.gcroots_dir(store_root) / ROOTS_SUBDIR
    for directory in sorted(roots.iterdir()) if roots.is_dir() else []:
        if env_path(state_dir, directory.name).exists():
            continue
        with _try_flock(state_dir / "locks" / f"{directory.name}.lock") as free:
            if free and not env_path(state_dir, directory.name).exists():
                shutil.rmtree(directory, ignore_errors=True)
    views = state_dir / storeview.VIEWS
    for view in sorted(views.iterdir()) if views.is_dir() else []:
        with _try_flock(state_dir / "locks" / f"{view.name}.lock") as free:
            if free and not env_path(state_dir, view.name).exists():
                storeview.remove(str(state_dir), view.name)
    tmp = state_dir / "tmp"
    for leftover in sorted(tmp.iterdir()) if tmp.is_dir() else []:
        digest = leftover.name.removeprefix("gc-").split(".", 1)[0]
        with _try_flock(state_dir / "locks" / f"{digest}.lock") as free:
            if free:
                shutil.rmtree(leftover, ignore_errors=True)


def _store_gc(store_root: Path | None, candidates: list[str]) -> tuple[list[str], float]:
    from shim.core import nix

    base = ["nix-store", *nix.base_options(), *nix.store_args(store_root)]
    if store_root is not None:  # a store only floxk uses: everything unrooted goes
        out, progress = nix.run_nix_with_log([*base, "--gc"], what="garbage-collecting the store")
        return _deleted(out, progress)
    # The host's store holds more than floxk's paths: delete only the freed closures'
    # paths that nothing else (a profile, another environment's root) keeps alive.
    if not candidates:
        return [], 0.0
    live = set(
        nix.run_nix([*base, "--gc", "--print-live"], what="listing live store paths").split()
    )
    dead = [p for p in candidates if p not in live]
    if not dead:
        return [], 0.0
    try:
        out, progress = nix.run_nix_with_log(
            [*base, "--delete", *dead], what="deleting freed store paths"
        )
    except NixError as e:  # something rooted one of them meanwhile: keep them all
        raise RealizeError(f"store GC skipped: {e.message}") from None
    return _deleted(out, progress)


def _would_delete(store_root: Path | None, candidates: list[str], freed: list[str]) -> list[str]:
    """What collect() would delete, with the freed environments' roots still in place."""
    from shim.core import nix

    base = ["nix-store", *nix.base_options(), *nix.store_args(store_root)]
    roots = nix.run_nix([*base, "--gc", "--print-roots"], what="listing GC roots")
    remaining = []
    for line in roots.splitlines():
        link, _, target = line.partition(" -> ")
        if any(f"/{ROOTS_SUBDIR}/{digest}/" in link for digest in freed):
            continue
        if nix.is_store_path(target):
            remaining.append(target)
    alive = set(nix.closure(remaining, store_root=store_root))
    pool = set(candidates)
    if store_root is not None:
        dead = nix.run_nix([*base, "--gc", "--print-dead"], what="listing dead store paths")
        pool.update(line for line in dead.splitlines() if line)
    return sorted(pool - alive)


def _deleted(out: str, progress: str) -> tuple[list[str], float]:
    import re  # only when the store is collected, never on a container create

    m = re.search(r"(\d+) store paths deleted, ([0-9.]+) MiB freed", out + progress)
    deleted = re.findall(r"deleting '(/nix/store/[^']+)'", progress)
    return sorted(deleted), float(m.group(2)) if m else 0.0


def _check_id(value: str) -> None:
    if not is_name(dollar_end(value or ""), _MAX_ID):
        raise RealizeError(f"invalid container id: {value!r}")


def _check_digest(value: str) -> None:
    v = dollar_end(value or "")
    if not (len(v) == 64 and _HEX.issuperset(v)):
        raise RealizeError(f"invalid digest: {value!r}")


class _try_flock:  # noqa: N801 -- used like a function: `with _try_flock(path) as free:`
    """Gives True holding the lock, False if someone else holds it (never waits).

    A class, not @contextlib.contextmanager: contextlib's import costs time on every create."""

    def __init__(self, path: str | Path) -> None:
        self.path, self.fd = path, -1

    def __enter__(self) -> bool:
        os.makedirs(os.path.dirname(os.fspath(self.path)), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except BaseException:
            os.close(self.fd)
            raise
        return True

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
