"""What the node did: JSON lines in the node log, and their summary (`floxk-node stats`).

Every realization, create, deadline and GC appends one JSON object to the node log
(node.toml's log_file, default state_dir/floxk.log; the prefetch's plain-text notes share
it, so readers take only lines starting with `{`):

    {"time": 1764580000.123, "event": "create", "env": "acme/hello", "digest": "...",
     "container": "...", "cold": false, "ms": {"resolve": 1.2, "realize": 0.3, "rewrite": 0.9}}
    {"time": ..., "event": "realize", "env": ..., "digest": ..., "seconds": 4.2,
     "ms": {"substitute": 3100.0, "verify": 450.2, "tree": 12.5}, "paths": 14}
    {"time": ..., "event": "timeout", "env": ..., "seconds": 300}
    {"time": ..., "event": "gc", "reason": "pressure", "used_percent_before": 91.0, ...}

emit() runs on every create: it uses shim.core.fastjson, never json. The log is rotated once
it passes ROTATE_BYTES (one previous file, `.1`), so a node that runs for months keeps at
most twice that. Reading (summary, prometheus) is a cold path and may import anything of
the standard library. Standard library only.
"""

from __future__ import annotations

import os
import time

from shim.core import fastjson

ROTATE_BYTES = 8 * 1024 * 1024
GC_LAST = "gc-last.json"  # state_dir/gc-last.json: the last GC's result (any reason)
SLOWEST = 5


def emit(log_path: str, event: str, **fields: object) -> None:
    """Append {"time", "event", **fields} as one line (one write: lines never interleave).
    Best effort: a full or read-only disk must not fail a container."""
    line = fastjson.dumps({"time": round(time.time(), 3), "event": event, **fields}) + "\n"
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except FileNotFoundError:
        try:
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError:
            return
    except OSError:
        return
    try:
        os.write(fd, line.encode())
        if os.fstat(fd).st_size > ROTATE_BYTES:
            os.replace(log_path, log_path + ".1")  # writers holding the old fd finish there
    except OSError:
        pass
    finally:
        os.close(fd)


def ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


# --- reading -------------------------------------------------------------------------------


def events(log_path: str) -> list[dict]:
    """Every JSON event of the node log (the rotated file first), oldest first."""
    import json

    found = []
    for path in (log_path + ".1", log_path):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.startswith("{"):
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a full disk
                    if isinstance(item, dict) and isinstance(item.get("event"), str):
                        found.append(item)
        except FileNotFoundError:
            continue
    return found


def summary(node) -> dict:
    """The node at a glance: environments (bytes, users, last use), the store's
    filesystem, realizations and creates (counts, slowest), deadlines hit, the last GC."""
    from shim.core import pressure

    state_dir, store_root = node.state_dir, node.store_root
    envs = pressure.environments(state_dir, store_root)
    log = events(node.log_path)
    named = sorted(  # the realization's name (with its generation) wins over a create's
        (e for e in log if e.get("digest") and e.get("env")), key=lambda e: e["event"] == "realize"
    )
    names = {e["digest"]: e["env"] for e in named}
    for env in envs:
        env["env"] = names.get(env["digest"])
    realized = [e for e in log if e["event"] == "realize"]
    creates = [e for e in log if e["event"] == "create"]
    slowest = sorted(realized, key=lambda e: e.get("seconds") or 0, reverse=True)[:SLOWEST]
    try:
        with open(os.path.join(state_dir, GC_LAST), encoding="utf-8") as f:
            import json

            last_gc = json.load(f)
    except (OSError, ValueError):
        last_gc = None
    fs = pressure.usage(node.store_dir)
    return {
        "state_dir": str(state_dir),
        "store": node.store_dir,
        "filesystem": fs,
        "gc_policy": {
            "auto": node.gc.auto,
            "high_percent": node.gc.high_percent,
            "low_percent": node.gc.low_percent,
            "min_unused_age": node.gc.min_unused_age,
        },
        "realize_timeout": node.realize_timeout,
        "environments": envs,
        "environments_bytes": pressure.closure_bytes(
            sorted({p for env in envs for p in env.pop("closure")}), store_root
        ),
        "in_use": sum(1 for env in envs if env["users"]),
        "realizations": len(realized),
        "realize_seconds_total": round(sum(e.get("seconds") or 0 for e in realized), 3),
        "slowest_realizations": [
            {k: e.get(k) for k in ("time", "env", "digest", "seconds", "ms")} for e in slowest
        ],
        "creates": {
            "cold": sum(1 for e in creates if e.get("cold")),
            "warm": sum(1 for e in creates if not e.get("cold")),
        },  # fmt: skip
        "timeouts": sum(1 for e in log if e["event"] == "timeout"),
        "last_gc": last_gc,
    }


def prometheus(data: dict) -> str:
    """summary() in Prometheus' text format, for node-exporter's textfile collector."""
    fs = data["filesystem"]
    gc = data["last_gc"] or {}
    metrics = [
        ("floxk_environments", "gauge", "Environment trees on this node.", [("", len(data["environments"]))]),
        ("floxk_environments_in_use", "gauge", "Trees a live container uses.", [("", data["in_use"])]),
        ("floxk_environments_bytes", "gauge", "Bytes of the store paths the trees need (NAR size).", [("", data["environments_bytes"])]),
        ("floxk_store_filesystem_used_ratio", "gauge", "Used share of the store's filesystem.", [("", fs["used_percent"] / 100)]),
        ("floxk_store_filesystem_size_bytes", "gauge", "Size of the store's filesystem.", [("", fs["size_bytes"])]),
        ("floxk_realizations_total", "counter", "Realizations in the node log.", [("", data["realizations"])]),
        ("floxk_realize_seconds_total", "counter", "Seconds spent realizing.", [("", data["realize_seconds_total"])]),
        ("floxk_realize_slowest_seconds", "gauge", "The slowest realization in the node log.", [("", max([e["seconds"] or 0 for e in data["slowest_realizations"]], default=0))]),
        ("floxk_creates_total", "counter", "Container creates in the node log.", [('{start="cold"}', data["creates"]["cold"]), ('{start="warm"}', data["creates"]["warm"])]),
        ("floxk_realize_timeouts_total", "counter", "Realizations stopped at realize_timeout.", [("", data["timeouts"])]),
        ("floxk_gc_last_run_timestamp_seconds", "gauge", "When GC last ran (0: never).", [("", gc.get("time") or 0)]),
        ("floxk_gc_last_freed_bytes", "gauge", "Bytes the last GC freed.", [("", gc.get("bytes_freed") or 0)]),
    ]  # fmt: skip
    lines = []
    for name, kind, help_text, samples in metrics:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_prometheus(path: str, data: dict) -> None:
    """Write the textfile atomically (node-exporter must never read half a file)."""
    from shim.core.atomic import write_atomic

    write_atomic(path, prometheus(data).encode(), 0o644)


def render(data: dict) -> str:
    """summary() for people."""
    fs = data["filesystem"]
    lines = [
        f"store {data['store']}: {fs['used_percent']:.1f}% of {_size(fs['size_bytes'])} used "
        f"(GC at {data['gc_policy']['high_percent']:g}% down to "
        f"{data['gc_policy']['low_percent']:g}%"
        + ("" if data["gc_policy"]["auto"] else ", automatic GC off")
        + ")",
        f"environments: {len(data['environments'])} ({data['in_use']} in use), "
        f"{_size(data['environments_bytes'])} of store paths",
    ]
    for env in sorted(data["environments"], key=lambda e: -(e["last_used"] or 0)):
        users = f"{len(env['users'])} container(s)" if env["users"] else "unused"
        lines.append(
            f"  {env['digest'][:12]}  {env['env'] or '?':<24} {_size(env['bytes']):>9}  "
            f"{users}, last used {_ago(env['last_used'])}"
        )
    c = data["creates"]
    lines.append(
        f"realizations: {data['realizations']} ({data['realize_seconds_total']:.1f} s), "
        f"creates: {c['cold']} cold / {c['warm']} warm, deadlines hit: {data['timeouts']}"
    )
    for e in data["slowest_realizations"]:
        phases = ", ".join(f"{k} {v / 1000:.1f}s" for k, v in (e.get("ms") or {}).items())
        lines.append(f"  {e['seconds']:.1f} s  {e['env'] or e['digest'][:12]}  ({phases})")
    gc = data["last_gc"]
    if gc:
        lines.append(
            f"last GC: {_ago(gc.get('time'))} ({gc.get('reason')}), freed "
            f"{len(gc.get('freed_envs') or [])} environment(s), {_size(gc.get('bytes_freed') or 0)}"
        )
    else:
        lines.append("last GC: never")
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _ago(when: float | None) -> str:
    if not when:
        return "never"
    s = max(0, time.time() - when)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit} ago"
    return f"{s:.0f}s ago"
