"""Who uses which environment tree, and freeing what nobody uses.

    state_dir/uses/<digest>/<container_id>   holds the container's bundle path

A use is live while its bundle directory exists (containerd removes the bundle when the
container is deleted), so a crashed runtime cannot pin an environment forever. Call
mark_in_use() BEFORE realize() for a container: then gc can never free a tree between
realization and use.

collect() frees trees without live users (with their GC roots), then runs Nix's GC:
`nix-store --gc` on a chroot store (floxk owns it), and on the host's own store only a
targeted `nix-store --delete` of the freed environments' paths that nothing else keeps alive.

Standard library only (runs on nodes).
"""

from __future__ import annotations

import fcntl
import os

from shim.core import fastjson, storeview
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


# --- automatic GC at disk pressure (node.toml [gc]) ------------------------------------------
# Like kubelet's image GC: when the store's filesystem is gc.high_percent full, free the least
# recently used trees no live container uses (and unused for gc.min_unused_age), each with
# the store paths no remaining tree needs, until it is below gc.low_percent. Checked after
# every cold realization (one statvfs; the collection itself runs detached, so the create
# that realized does not wait) and by the systemd timer `floxk-node gc --auto`.


def usage(path: str | Path) -> dict:
    """The filesystem holding `path` (or its nearest existing parent): size, used, percent."""
    p = os.fspath(path)
    while not os.path.exists(p) and p not in ("", "/"):
        p = os.path.dirname(p)
    st = os.statvfs(p or "/")
    size = st.f_blocks * st.f_frsize
    available = st.f_bavail * st.f_frsize
    used = size - st.f_bfree * st.f_frsize
    # kubelet's measure: what non-root users cannot use counts as used.
    percent = 100.0 * (size - available) / size if size else 0.0
    return {
        "path": p,
        "size_bytes": size,
        "used_bytes": used,
        "available_bytes": available,
        "used_percent": round(percent, 2),
    }


def last_used(state_dir: str | Path, digest: str) -> float:
    """When a container last started or stopped using the tree (its uses/ directory changes
    then), or when it was built if none ever did."""
    times = []
    for p in (
        os.path.join(state_dir, "uses", digest),
        os.path.join(state_dir, "envs", digest, ACTIVATION),
    ):
        try:
            times.append(os.stat(p).st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


def environments(state_dir: str | Path, store_root: str | Path | None) -> list[dict]:
    """Every tree: digest, live users, last use, closure and its bytes (NAR size)."""
    found = []
    envs = os.path.join(state_dir, "envs")
    for digest in sorted(os.listdir(envs)) if os.path.isdir(envs) else []:
        env = os.path.join(envs, digest)
        from pathlib import Path

        closure = _closure_of(Path(env))
        found.append(
            {
                "digest": digest,
                "users": live_users(Path(state_dir), digest),
                "last_used": last_used(state_dir, digest),
                "closure": closure,
                "bytes": closure_bytes(closure, store_root),
            }
        )
    return found


def closure_bytes(paths: list[str], store_root: str | Path | None) -> int:
    """Sum of the paths' NAR sizes from the store's database (0 where it cannot be read)."""
    import contextlib
    import sqlite3

    if not paths:
        return 0
    db = os.path.join(store_root or "/", "nix", "var", "nix", "db", "db.sqlite")
    total = 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            con.execute("PRAGMA busy_timeout = 5000")
            for i in range(0, len(paths), 500):
                chunk = paths[i : i + 500]
                row = con.execute(
                    "SELECT SUM(narSize) FROM ValidPaths WHERE path IN "
                    f"({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchone()
                total += int(row[0] or 0)
    except sqlite3.Error:
        return 0
    return total


def collect_at_pressure(node, *, reason: str = "pressure", force: bool = False) -> dict:
    """Free least recently used trees until the store's filesystem is below the low mark.

    Nothing happens below the high mark (unless `force`: start as if above it). Never frees
    a tree with a live user or one being realized; returns what it did and records it
    (state_dir/gc-last.json, a "gc" event in the node log)."""
    import time

    policy = node.gc
    state_dir, store_root = node.state_dir, node.store_root
    start = time.monotonic()
    before = usage(node.store_dir)
    result = {
        "reason": reason,
        "used_percent_before": before["used_percent"],
        "high_percent": policy.high_percent,
        "low_percent": policy.low_percent,
        "freed_envs": [],
        "kept_in_use": [],
        "kept_recent": [],
        "store_paths_deleted": [],
        "errors": [],
    }
    if before["used_percent"] < policy.high_percent and not force:
        result.update(ran=False, used_percent_after=before["used_percent"])
        return result
    from pathlib import Path

    with _try_flock(os.path.join(state_dir, "locks", "gc.lock.auto")) as free:
        if not free:  # another automatic GC is at work
            result.update(ran=False, used_percent_after=before["used_percent"], busy=True)
            return result
        now = time.time()
        candidates = []
        for env in environments(state_dir, store_root):
            if env["users"]:
                result["kept_in_use"].append(env["digest"])
            elif now - env["last_used"] < policy.min_unused_age:
                result["kept_recent"].append(env["digest"])
            else:
                candidates.append(env)
        candidates.sort(key=lambda env: env["last_used"])
        current = before
        for env in candidates:
            if current["used_percent"] < policy.low_percent:
                break
            digest = env["digest"]
            try:
                freed = _free_one(Path(state_dir), store_root, digest)
            except Exception as e:  # noqa: BLE001 - one tree's failure must not stop GC
                result["errors"].append(f"{digest}: {e}")
                continue
            if freed is None:  # a container started using it meanwhile, or it is realizing
                result["kept_in_use"].append(digest)
                continue
            result["freed_envs"].append(digest)
            result["store_paths_deleted"] += freed
            current = usage(node.store_dir)
    after = usage(node.store_dir)
    result.update(
        ran=True,
        used_percent_after=after["used_percent"],
        bytes_freed=max(0, before["used_bytes"] - after["used_bytes"]),
        below_low=after["used_percent"] < policy.low_percent,
        seconds=round(time.monotonic() - start, 3),
    )
    record_gc(node, result)
    return result


def _free_one(state_dir: Path, store_root: str | Path | None, digest: str) -> list[str] | None:
    """Remove one unused tree and the store paths of its closure no other root keeps."""
    from pathlib import Path

    store_root = Path(store_root) if store_root is not None else None
    with file_lock(state_dir / "locks" / "gc.lock"):
        with _try_flock(state_dir / "locks" / f"{digest}.lock") as free:
            # Checked again under the locks: a create marks its use before it realizes.
            if not free or live_users(state_dir, digest, prune=True):
                return None
            closure = _closure_of(env_path(state_dir, digest))
            _remove_env(state_dir, store_root, digest)
        deleted, _ = _store_gc(store_root, sorted(closure))
    return deleted


def record_gc(node, result: dict) -> None:
    """Keep the last GC's result for `floxk-node stats` and log it as a "gc" event."""
    import time

    from shim.core import stats

    result.setdefault("time", round(time.time(), 3))
    if "bytes_freed" not in result and "mib_freed" in result:  # collect(): Nix's count
        result["bytes_freed"] = int(result["mib_freed"] * 1024 * 1024)
    summary = {k: v for k, v in result.items() if k != "store_paths_deleted"}
    summary["store_paths_deleted"] = len(result.get("store_paths_deleted") or [])
    try:
        os.makedirs(node.state_dir, exist_ok=True)
        write_atomic(
            os.path.join(node.state_dir, stats.GC_LAST),
            fastjson.dumps({**summary, "store_paths": result.get("store_paths_deleted")}).encode(),
            0o644,
        )
    except OSError:
        pass
    stats.emit(node.log_path, "gc", **summary)


def after_realization(node) -> bool:
    """Called after each cold realization: one statvfs; above the high mark, start the
    automatic GC detached (the create that realized does not wait). True if started."""
    if not node.gc.auto:
        return False
    try:
        if usage(node.store_dir)["used_percent"] < node.gc.high_percent:
            return False
    except OSError:
        return False
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return True
    try:  # the child: a new session, stdio on the node log, then GC in a grandchild
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            log = os.open(node.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError:
            log = devnull
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 1024)
        collect_at_pressure(node, reason="after-realization")
    except BaseException as e:  # a forked child must never return into the create
        try:
            os.write(2, f"floxk: automatic GC failed: {type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(0)
