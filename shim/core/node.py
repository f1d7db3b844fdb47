"""Node configuration: /etc/floxk/node.toml (FLOXK_NODE_CONFIG overrides the path).

A missing file means defaults (a node with no hub can still run plain pods); a file
that exists but is wrong is a ConfigError naming the key and the file, because a
typo in a security setting must not silently fall back to a default.
"""

from __future__ import annotations

import os
import sys

from shim.core.errors import ConfigError
from shim.core.records import factory, record

DEFAULT_PATH = "/etc/floxk/node.toml"
DEFAULT_STATE_DIR = "/var/lib/floxk"
ENV_VAR = "FLOXK_NODE_CONFIG"

# A generated front script (shim.front) carries one of these lines; finding "runc" or
# containerd-shim-runc-v2 on PATH must never pick floxk's own front (it would exec itself).
FRONT_MARKER = "# floxk-runc front"
SHIM_FRONT_MARKER = "# containerd-shim-flox-v2 front"


@record(frozen=True)
class Policy:
    allowed_owners: list[str] = factory(list)  # empty: every owner
    allow_nix_mutable: bool = False


@record(frozen=True)
class GcPolicy:
    """Automatic GC at disk pressure, like kubelet's image GC (node.toml `[gc]`): when the
    store's filesystem is `high_percent` full, free the least recently used environments
    unused for `min_unused_age` seconds until it is below `low_percent`."""

    auto: bool = True
    high_percent: float = 85.0
    low_percent: float = 80.0
    min_unused_age: float = 120.0
    interval: float = 300.0  # seconds between the systemd timer's checks


DEFAULT_REALIZE_TIMEOUT = 300.0
DEFAULT_TOKEN_CACHE_TTL = 30.0


@record(frozen=True)
class Credential:
    """A hub or cache that needs a token (node.toml `[[credentials]]`, see shim.core.auth):
    `auth` "pod-token" (the pod's floxhub-token Secret) or "node-token" (`token_file`)."""

    url: str
    auth: str
    token_file: str | None = None


@record(frozen=True)
class NodeConfig:
    hubs: list[str] = factory(list)
    substituters: list[str] = factory(list)
    trusted_public_keys: list[str] = factory(list)
    # Paths are str, not pathlib.Path: importing pathlib (re, fnmatch, urllib) costs ms per create.
    state_dir: str = DEFAULT_STATE_DIR
    store_root: str | None = None  # None: the host's own /nix/store
    runc: str | None = None  # None: found on PATH when needed (find_runc)
    runc_v2_shim: str | None = None  # None: containerd-shim-runc-v2 on PATH
    log_file: str | None = None  # None: state_dir/floxk.log
    policy: Policy = factory(Policy)
    gc: GcPolicy = factory(GcPolicy)
    realize_timeout: float = DEFAULT_REALIZE_TIMEOUT  # seconds, then the realization is killed
    credentials: list[Credential] = factory(list)  # hubs and caches that need a token
    token_cache_ttl: float = DEFAULT_TOKEN_CACHE_TTL  # seconds a hub's yes to a token is kept
    store_view: bool = True  # containers see only their closure at /nix/store (shim.core.storeview)
    source: str = "<defaults>"

    @property
    def store_dir(self) -> str:
        """The directory mounted at /nix/store inside containers."""
        return os.path.join(self.store_root or "/", "nix", "store")

    @property
    def log_path(self) -> str:
        return self.log_file or os.path.join(self.state_dir, "floxk.log")

    def find_runc(self) -> str:
        """The real runc: node.toml's `runc`, else the first `runc` on PATH that is not floxk's."""
        return self._program(
            self.runc, "runc", "no real runc found on PATH",
            f'install runc or set runc = "/path/to/runc" in {self.source}',
        )  # fmt: skip

    def find_runc_v2_shim(self) -> str:
        return self._program(
            self.runc_v2_shim, "containerd-shim-runc-v2",
            "containerd-shim-runc-v2 not found on PATH",
            f"install containerd or set runc_v2_shim in {self.source}",
        )  # fmt: skip

    def _program(self, configured: str | None, name: str, missing: str, hint: str) -> str:
        """`configured` (node.toml's path), else `name` on PATH (not floxk's own), else a
        ConfigError saying `missing`."""
        found = configured or find_program(name)
        if not found:
            raise ConfigError(missing, hint=hint)
        return found


def config_path() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def load_node_config(path: str | os.PathLike[str] | None = None) -> NodeConfig:
    """Read node.toml (default: $FLOXK_NODE_CONFIG or /etc/floxk/node.toml)."""
    p = os.fspath(path) if path is not None else config_path()
    try:
        with open(p, "rb") as f:
            stamp = _stamp(p, os.fstat(f.fileno()))
            data = _cached(stamp)
            raw = f.read() if data is None else b""
    except FileNotFoundError:
        return NodeConfig(source=str(p))
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from e
    if data is None:
        try:
            text = raw.decode()
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text: {e}") from None
        data = _toml(text, str(p))
        _store(stamp, data)
    return node_config_from_data(data, source=str(p))


def parse_node_config(text: str, *, source: str = "node.toml") -> NodeConfig:
    return node_config_from_data(_toml(text, source), source=source)


def _toml(text: str, source: str) -> dict:
    import tomllib  # here, not at the top: see _cached()

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from None


# --- parsed node.toml, cached ---------------------------------------------------------------
# floxk-runc reads node.toml on every container create, and importing tomllib (with typing,
# datetime, string) costs several ms there. So the parsed TOML is kept as JSON under
# CACHE_DIR (a tmpfs on nodes), keyed by the file's path and stamped with its inode, size,
# mtime and ctime: any change of the file misses the cache. A file changed within the last
# seconds is not cached at all (its timestamps could repeat within the clock's granularity),
# and a cache file not owned by us alone is ignored.

CACHE_DIR = "/run/floxk/node-config"
_FRESH_NS = 2_000_000_000


def _stamp(path: str, st: os.stat_result) -> dict:
    return {
        "path": os.path.abspath(path),
        "file": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns],
    }


def _cache_file(stamp: dict) -> str:
    from shim.core.digest import sha256

    return os.path.join(CACHE_DIR, sha256(stamp["path"].encode()).hexdigest()[:32] + ".json")


def _cached(stamp: dict) -> dict | None:
    from shim.core import fastjson as json

    try:
        with open(_cache_file(stamp), "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            entry = json.loads(f.read())
    except (OSError, ValueError, RecursionError):  # not ours to trust: read node.toml itself
        return None
    if not isinstance(entry, dict) or entry.get("stamp") != stamp:
        return None
    data = entry.get("data")
    return data if isinstance(data, dict) else None


def _store(stamp: dict, data: dict) -> None:
    """Best effort: no cache when the file is too fresh, CACHE_DIR is not ours or not
    writable, or the TOML holds what JSON cannot (dates)."""
    import time

    from shim.core import fastjson as json

    if time.time_ns() - stamp["file"][4] < _FRESH_NS:
        return
    try:
        text = json.dumps({"stamp": stamp, "data": data})
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        st = os.stat(CACHE_DIR)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return
        from shim.core.atomic import write_atomic

        write_atomic(_cache_file(stamp), text.encode(), 0o600)
    except (OSError, TypeError, ValueError):
        pass


def node_config_from_data(data: dict, *, source: str = "node.toml") -> NodeConfig:
    """A NodeConfig from node.toml's parsed content; ConfigError naming a wrong key."""
    r = _Reader(data, source)
    hubs = r.url_list("hubs")
    policy_table = r.table("policy")
    pr = _Reader(policy_table, source, prefix="policy.")
    policy = Policy(
        allowed_owners=pr.str_list("allowed_owners"),
        allow_nix_mutable=pr.boolean("allow_nix_mutable", False),
    )
    pr.reject_unknown()
    gr = _Reader(r.table("gc"), source, prefix="gc.")
    defaults = GcPolicy()
    gc = GcPolicy(
        auto=gr.boolean("auto", defaults.auto),
        high_percent=gr.percent("high_percent", defaults.high_percent),
        low_percent=gr.percent("low_percent", defaults.low_percent),
        min_unused_age=gr.duration("min_unused_age", defaults.min_unused_age, zero=True),
        interval=gr.duration("interval", defaults.interval),
    )
    if gc.low_percent > gc.high_percent:
        raise ConfigError(
            f"{source}: gc.low_percent ({gc.low_percent:g}) is above gc.high_percent "
            f"({gc.high_percent:g})",
            hint=f"GC frees from the high mark down to the low one: set low <= high in {source}",
        )
    gr.reject_unknown()
    cfg = NodeConfig(
        hubs=hubs,
        substituters=r.url_list("substituters") if "substituters" in data else list(hubs),
        trusted_public_keys=r.str_list("trusted_public_keys"),
        state_dir=r.abs_path("state_dir") or DEFAULT_STATE_DIR,
        store_root=r.abs_path("store_root"),
        runc=r.abs_path("runc"),
        runc_v2_shim=r.abs_path("runc_v2_shim"),
        log_file=r.abs_path("log_file"),
        policy=policy,
        gc=gc,
        realize_timeout=r.duration("realize_timeout", DEFAULT_REALIZE_TIMEOUT),
        credentials=_credentials(r, source),
        token_cache_ttl=r.duration("token_cache_ttl", DEFAULT_TOKEN_CACHE_TTL, zero=True),
        store_view=r.boolean("store_view", True),
        source=source,
    )
    r.reject_unknown()
    return cfg


def _credentials(r: _Reader, source: str) -> list[Credential]:
    """[[credentials]]: url (http/https), auth = "pod-token" | "node-token", token_file
    (an absolute path, with node-token only)."""
    tables = r._get("credentials")
    if tables is None:
        return []
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise r._bad("credentials", 'an array of tables ([[credentials]] url = "..." auth = "...")')
    found = []
    for i, table in enumerate(tables):
        cr = _Reader(table, source, prefix=f"credentials[{i}].")
        url = cr._get("url")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise cr._bad("url", "an http:// or https:// URL of a hub or cache")
        auth = cr._get("auth")
        if auth not in ("pod-token", "node-token"):
            raise cr._bad("auth", '"pod-token" or "node-token"')
        token_file = cr.abs_path("token_file")
        if (auth == "node-token") != (token_file is not None):
            raise ConfigError(
                f'{source}: credentials[{i}]: token_file goes with auth = "node-token" '
                "(and only with it)",
                hint=f'auth = "node-token" reads the token from token_file; auth = "pod-token" '
                f"from the pod's floxhub-token Secret (fix credentials[{i}] in {source})",
            )
        cr.reject_unknown()
        found.append(Credential(url=url, auth=auth, token_file=token_file))
    from shim.core.auth import hosts_conflict

    for host in hosts_conflict(found):
        raise ConfigError(
            f"{source}: credentials for {host} differ between its URLs",
            hint="Nix takes a cache's credentials per host (netrc): give every URL of one "
            "host the same auth and token_file",
        )
    return found


def find_program(name: str) -> str | None:
    """First executable `name` on PATH that is neither this process's own program nor a floxk front."""
    import shutil  # only when a program is searched for: node.toml usually names them

    me = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else None
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        cand = shutil.which(name, path=d or ".")
        if cand is None:
            continue
        real = os.path.realpath(cand)
        if real == me or _is_front(real):
            continue
        return cand
    return None


def _is_front(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return head.startswith(b"#!") and any(
        marker.encode() in head for marker in (FRONT_MARKER, SHIM_FRONT_MARKER)
    )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Reader:
    """Typed access to one TOML table; every key read is remembered to reject the rest."""

    def __init__(self, data: dict, source: str, prefix: str = "") -> None:
        self.data, self.source, self.prefix = data, source, prefix
        self.seen: set[str] = set()

    def _get(self, key: str):
        self.seen.add(key)
        return self.data.get(key)

    def _bad(self, key: str, want: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {self.prefix}{key} must be {want}, got {self.data.get(key)!r}",
            hint=f"fix {self.prefix}{key} in {self.source} (see docs/runtime.md)",
        )

    def _checked(self, key: str, default, valid, want: str):
        """`key`'s value, `default` when it is not set; a ConfigError saying the value must
        be `want` unless valid(value)."""
        v = self._get(key)
        if v is None:
            return default
        if not valid(v):
            raise self._bad(key, want)
        return v

    def str_list(self, key: str) -> list[str]:
        return list(
            self._checked(
                key, [], lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
                "a list of non-empty strings",
            )
        )  # fmt: skip

    def url_list(self, key: str) -> list[str]:
        v = self.str_list(key)
        for u in v:
            if "://" not in u:
                raise self._bad(key, "a list of URLs (file://, http://, https://)")
        return v

    def boolean(self, key: str, default: bool) -> bool:
        return self._checked(key, default, lambda v: isinstance(v, bool), "true or false")

    def abs_path(self, key: str) -> str | None:
        return self._checked(
            key, None, lambda v: isinstance(v, str) and v.startswith("/"), "an absolute path"
        )

    def percent(self, key: str, default: float) -> float:
        return float(
            self._checked(
                key, default,
                lambda v: not isinstance(v, bool) and isinstance(v, int | float) and 0 < v <= 100,
                "a percentage above 0, at most 100",
            )
        )  # fmt: skip

    def duration(self, key: str, default: float, *, zero: bool = False) -> float:
        """Seconds: a number, or a string like "90s", "5m", "1h", "2d"."""
        v = self._get(key)
        if v is None:
            return default
        seconds = None
        if isinstance(v, int | float) and not isinstance(v, bool):
            seconds = float(v)
        elif isinstance(v, str) and v[-1:] in _UNITS and v[:-1].replace(".", "", 1).isdigit():
            seconds = float(v[:-1]) * _UNITS[v[-1]]
        if seconds is None or seconds < 0 or (seconds == 0 and not zero) or seconds != seconds:
            want = "seconds (a number" + (" >= 0" if zero else " > 0")
            raise self._bad(key, want + ', or a string like "90s", "5m", "1h")')
        return seconds

    def table(self, key: str) -> dict:
        v = self._get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self._bad(key, "a table")
        return v

    def reject_unknown(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise ConfigError(
                f"{self.source}: unknown key {self.prefix}{extra[0]}",
                hint="known keys: hubs, substituters, trusted_public_keys, state_dir, store_root, "
                "runc, runc_v2_shim, log_file, realize_timeout, store_view, token_cache_ttl, "
                "[[credentials]] url, auth, token_file, [policy] allowed_owners, "
                "allow_nix_mutable, [gc] auto, high_percent, low_percent, min_unused_age, "
                "interval",
            )
