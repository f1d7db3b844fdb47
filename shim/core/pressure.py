"""Automatic GC at disk pressure (node.toml [gc]): when to collect and what to free first.

The policy over shim.core.gc's collection: the store's filesystem usage, each tree's last
use and closure size, freeing least recently used trees down to the low mark, the record of
the last GC (`floxk-node stats`), and the detached GC after a cold realization.

Standard library only (runs on nodes).
"""

from __future__ import annotations

import os

from shim.core import fastjson
from shim.core.atomic import write_atomic
from shim.core.gc import _closure_of, _remove_env, _store_gc, _try_flock, live_users
from shim.core.realize import ACTIVATION, env_path, file_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


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
