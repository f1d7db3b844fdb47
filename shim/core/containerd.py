"""containerd configuration for the flox runtime, per containerd line (standard library only).

Used by `floxk shim install`, `floxk up` (kind/k3d config patches) and the CRI test suite.
Core functions return data (dicts, TOML text); only `detect_version` and the oom probe look
at the host.

The runtime table lives under a different plugin id per config version, and containerd
silently ignores a table under the wrong id (pods then fail with `no runtime for "flox" is
configured`):
- config `version = 2` (containerd 1.x): plugins."io.containerd.grpc.v1.cri".containerd.runtimes.flox
- config `version = 3` (2.0-2.2) and `version = 4` (2.3+):
  plugins."io.containerd.cri.v1.runtime".containerd.runtimes.flox
Version 4 moved only the server settings ([grpc], [ttrpc], [debug], [metrics] become
plugins."io.containerd.server.v1.*"); the CRI ids are those of version 3. Every 2.x reads
version 2 and 3 files (migrated when loaded, file by file, imports too), 2.3+ also 4; the
id a table must sit under is the one of the version its own file declares.

One runtime shape on every line: runtime_type "io.containerd.runc.v2", runtime_path -> the
wrapper shim (containerd-shim-flox-v2), options.BinaryName -> the interposer (floxk-runc).
What each line does with it (checked through CRI by tests/cri/test_flox_shape.py):
- 2.x: the wrapper shim is exec'd for the pod sandbox (start, delete, -info); app containers
  join the sandbox's shim; the interposer gets `create` for sandbox and app containers.
- 1.7: the wrapper shim is exec'd for `start` of the sandbox AND of every app container.
- 1.6: runtime_path is accepted but its CRI never execs it (it runs the runc-v2 shim found on
  PATH); BinaryName still reaches runc-v2, so the interposer acts on every container and only
  the early prefetch at sandbox start is lost.
We keep this shape on 1.6 too. The alternative, runtime_type "io.containerd.flox.v2" with the
wrapper on containerd's PATH, does get the wrapper exec'd on 1.6 (start for sandbox and app
container), but then 1.6 sends its options as runtimeoptions.v1.Options, which runc-v2 refuses
("type with url runtimeoptions.v1.Options: not found"); only without any options table does it
run, and then runc-v2 calls plain `runc` from PATH, so the interposer would have to be found
under that name. Not worth a second shape for a prefetch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from shim.core.errors import CommandError, ConfigError
from shim.core.proc import run

FLOX_RUNTIME = "flox"
FLOX_POD_ANNOTATIONS = ("flox.dev/*",)
RUNC_V2 = "io.containerd.runc.v2"

# config version -> the plugin id that holds the CRI runtime settings and runtimes table.
CRI_RUNTIME_PLUGIN = {
    2: "io.containerd.grpc.v1.cri",
    3: "io.containerd.cri.v1.runtime",
    4: "io.containerd.cri.v1.runtime",
}

# The value CRI asks runc to give the pause container; the oom probe tries to reach it.
SANDBOX_OOM_SCORE_ADJ = -998

_VERSION_RE = re.compile(r"(?:^|\s)v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) from "2.1.9", "v1.7.24" or `containerd --version` output."""
    match = _VERSION_RE.search(text)
    if match is None:
        raise ConfigError(
            f"cannot read a containerd version from {text.strip()!r}",
            hint='expected e.g. "1.7.24" or the output of `containerd --version`',
        )
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def detect_version(containerd: str = "containerd") -> str:
    """The X.Y.Z of a containerd binary, from `containerd --version`."""
    return ".".join(str(n) for n in parse_version(run([containerd, "--version"])))


def config_version(containerd_version: str) -> int:
    """The config `version` floxk writes whole configs in for this line: 2 for 1.x, 3 for 2.x.

    3, not 4, on 2.3+ too: every 2.x reads it, and a version 4 file needs its server
    settings (socket addresses) in other tables. What the line itself writes and dumps is
    default_config_version().
    """
    return min(default_config_version(containerd_version), 3)


def default_config_version(containerd_version: str) -> int:
    """The `version` this line's `containerd config default` writes and its `config dump`
    reports (every file it loads is migrated to it): 2 for 1.x, 3 for 2.0-2.2, 4 for 2.3+."""
    major, minor, _ = parse_version(containerd_version)
    if major == 1:
        return 2
    if major == 2:
        return 3 if minor < 3 else 4
    raise ConfigError(
        f"containerd {containerd_version} is not a line floxk knows",
        hint="floxk supports containerd 1.6, 1.7 and 2.x",
    )


def readable_config_versions(containerd_version: str) -> tuple[int, ...]:
    """The config file versions this line loads: 1.x reads 2; 2.x reads 2 up to its own."""
    return tuple(range(2, default_config_version(containerd_version) + 1))


def imports_dropins(containerd_version: str) -> bool:
    """Whether this line's default config imports /etc/containerd/conf.d/*.toml (2.2+)."""
    return parse_version(containerd_version) >= (2, 2, 0)


def runtime_plugin_id(containerd_version: str) -> str:
    """The plugin id whose `containerd.runtimes` table CRI reads on this line."""
    return CRI_RUNTIME_PLUGIN[config_version(containerd_version)]


def wrapper_shim_starts(containerd_version: str) -> str:
    """Which `start` calls the wrapper shim (runtime_path) gets from CRI on this line.

    "sandbox": once per pod, for the sandbox (2.x: app containers join the sandbox's shim);
    "all": for the sandbox and every app container (1.7);
    "none": never (1.6: CRI runs the runc-v2 shim from PATH, ignoring runtime_path).
    The interposer (BinaryName) sees `create` for every container on all three.
    """
    major, minor, _ = parse_version(containerd_version)
    if major >= 2:
        return "sandbox"
    return "all" if minor >= 7 else "none"


def flox_runtime_table(
    *,
    shim_path: str,
    runc_path: str,
    systemd_cgroup: bool = False,
    runc_root: str | None = None,
    pod_annotations: tuple[str, ...] = FLOX_POD_ANNOTATIONS,
) -> dict[str, Any]:
    """The body of `...containerd.runtimes.flox` (same on every line).

    shim_path: absolute path of containerd-shim-flox-v2 (runtime_path).
    runc_path: absolute path of floxk-runc (options.BinaryName, the runc runc-v2 calls).
    systemd_cgroup: must match the node's cgroup driver (false on kind and k3d).
    runc_root: options.Root, runc's state dir (None: runc-v2's default, /run/containerd/runc).
    """
    for what, path in (("shim_path", shim_path), ("runc_path", runc_path)):
        if not os.path.isabs(path):
            raise ConfigError(
                f"{what} must be an absolute path, got {path!r}",
                hint="containerd resolves runtime_path and BinaryName without a PATH search",
            )
    options: dict[str, Any] = {"BinaryName": runc_path, "SystemdCgroup": systemd_cgroup}
    if runc_root:
        options["Root"] = runc_root
    return {
        "runtime_type": RUNC_V2,
        "runtime_path": shim_path,
        "pod_annotations": list(pod_annotations),
        "options": options,
    }


def cri_runtime_config(
    containerd_version: str,
    *,
    runtimes: Mapping[str, Mapping[str, Any]],
    restrict_oom_score_adj: bool = False,
) -> dict[str, Any]:
    """A config (as a dict) registering `runtimes` (name -> table body) with CRI on this line.

    restrict_oom_score_adj: set it where runc cannot lower oom_score_adj (see
    needs_restrict_oom_score_adj); otherwise every sandbox fails to start there.
    """
    plugin: dict[str, Any] = {"containerd": {"runtimes": {k: dict(v) for k, v in runtimes.items()}}}
    if restrict_oom_score_adj:
        plugin["restrict_oom_score_adj"] = True
    return {
        "version": config_version(containerd_version),
        "plugins": {runtime_plugin_id(containerd_version): plugin},
    }


def flox_runtime_config(
    containerd_version: str,
    *,
    shim_path: str,
    runc_path: str,
    systemd_cgroup: bool = False,
    restrict_oom_score_adj: bool = False,
) -> dict[str, Any]:
    """The flox runtime registration for this containerd line, as a config dict."""
    table = flox_runtime_table(
        shim_path=shim_path, runc_path=runc_path, systemd_cgroup=systemd_cgroup
    )
    return cri_runtime_config(
        containerd_version,
        runtimes={FLOX_RUNTIME: table},
        restrict_oom_score_adj=restrict_oom_score_adj,
    )


def render_flox_runtime(containerd_version: str, **kwargs: Any) -> str:
    """flox_runtime_config as TOML: a drop-in / merge patch for that line's config.toml."""
    return to_toml(flox_runtime_config(containerd_version, **kwargs))


def merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge patch into a copy of base (tables merge, other values replace)."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# --- oom_score_adj ------------------------------------------------------------------------

CAP_SYS_RESOURCE = 24


def has_cap_sys_resource(status_path: str = "/proc/self/status") -> bool:
    """Whether this process's effective capabilities include CAP_SYS_RESOURCE."""
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def can_lower_oom_score_adj(target: int = SANDBOX_OOM_SCORE_ADJ) -> bool:
    """Whether a process here may set its oom_score_adj to `target` (below our own value).

    Tried for real by a child shell writing its own /proc/self/oom_score_adj, so the caller's
    score never changes (and no fork of a threaded caller). Without CAP_SYS_RESOURCE the kernel
    refuses values below what the process had, which makes runc fail every CRI sandbox
    ("failed to update /proc/self/oom_score_adj: Permission denied").
    """
    try:
        run(["sh", "-c", f"echo {int(target)} > /proc/self/oom_score_adj"])
    except CommandError:
        return False
    return True


def needs_restrict_oom_score_adj() -> bool:
    """True where containerd's CRI must set restrict_oom_score_adj = true (a host property)."""
    return not can_lower_oom_score_adj()


# --- TOML ---------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)  # fullmatch: `$` passes "k\n"


def _string(s: str) -> str:
    # JSON's escapes are TOML basic-string escapes, but not its surrogate pairs (\ud83d\ude00:
    # not Unicode scalar values for TOML), so no ASCII-only output; TOML forbids a raw DEL.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} {value!r} as TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """Write nested dicts as TOML (scalars, lists of scalars, tables); enough for containerd."""
    lines: list[str] = []

    def table(path: list[str], body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in body.items() if isinstance(v, Mapping)}
        if path and (scalars or not tables):
            lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        for key, value in scalars.items():
            lines.append(f"{_key(key)} = {_value(value)}")
        for key, value in tables.items():
            table([*path, key], value)

    table([], data)
    return "\n".join(lines).lstrip("\n") + "\n"
