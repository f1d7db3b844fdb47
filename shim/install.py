"""Register the flox runtime with a node's containerd, and take it off again (standard library only).

Runs as root on the node: `floxk-node install` (the zipapp) or `floxk shim install`.

What install adds, and uninstall removes:
- in the directory holding the zipapps (bin_dir, default /usr/lib/floxk): `real-runc`, a
  symlink to the node's runc, and the sh front `floxk-runc-front` (kept if the package
  already shipped it byte-identical). The front execs real-runc for every pass-through call
  and for sandboxes and plain containers, and Python (the floxk-runc zipapp) only for a flox
  container's create/run and for exec/delete (see shim/front.py);
- the sh front `containerd-shim-flox-v2-front` (containerd's runtime_path): it execs the
  node's containerd-shim-runc-v2 (found next to containerd, else on PATH; node.toml's
  runc_v2_shim overrides) and starts the zipapp's prefetch for flox sandboxes only. Where no
  runc-v2 shim is found, runtime_path is the containerd-shim-flox-v2 zipapp itself, which
  finds it when it runs;
- the flox runtime table, written as a marked block (`# >>> floxk` ... `# <<< floxk`) and
  never by re-serializing the operator's TOML (comments and layout stay theirs). The block
  uses the plugin id of the config version its own file declares (2: the 1.x id, 3 and 4:
  the 2.x id), so a version 2 or 3 file under a newer daemon (an upgraded node) gets the
  id that file's migration expects:
  * containerd 2.x whose config imports a glob (`conf.d/*.toml`, the >= 2.2 default): a
    drop-in `floxk.toml` there, in the daemon's own config version (2.x migrates and merges
    imports table by table);
  * otherwise appended to the file CRI's settings come from: the main config, or on
    containerd 1.x the last imported file that defines the CRI plugin, because 1.x replaces a
    plugin's whole section with an import's (checked on 1.6 and 1.7);
  * k3s/RKE2: their template (`config-v3.toml.tmpl` for containerd 2.x, `config.toml.tmpl`
    for 1.x) extended after `{{ template "base" . }}`; k3s renders it when it starts;
- `<file>.floxk-orig`: the original bytes of a file the block was appended to.

A second install with the same inputs writes nothing. After writing, the node's own
`containerd config dump` must show the runtime, or every file is put back as it was.
Uninstall strips the block and restores the original bytes (from the backup when the file
is otherwise unchanged). containerd is restarted only when asked.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shim.core import containerd as ctrd
from shim.core.errors import ConfigError, FloxkError, InUseError
from shim.core.node import find_program, load_node_config
from shim.core.proc import run
from shim.front import python_argv, render_front, render_shim_front

DEFAULT_BIN_DIR = "/usr/lib/floxk"
DEFAULT_CONFIG = "/etc/containerd/config.toml"
RANCHER_DIRS = {
    "k3s": "/var/lib/rancher/k3s/agent/etc/containerd",
    "rke2": "/var/lib/rancher/rke2/agent/etc/containerd",
}
SHIM_NAME = "containerd-shim-flox-v2"
RUNC_NAME = "floxk-runc"
NODE_NAME = "floxk-node"
FRONT_NAME = "floxk-runc-front"
SHIM_FRONT_NAME = "containerd-shim-flox-v2-front"
RUNC_V2_SHIM = "containerd-shim-runc-v2"
REAL_RUNC_LINK = "real-runc"
RECORD_NAME = ".floxk-install.json"
DROPIN_NAME = "floxk.toml"
BACKUP_SUFFIX = ".floxk-orig"
BEGIN = "# >>> floxk: flox runtime"
END = "# <<< floxk"
K3S_BASE = '{{ template "base" . }}'

NO_RUNTIME_HINT = (
    'pods then fail with `no runtime for "flox" is configured`; see docs/install.md, '
    "troubleshooting"
)


@dataclass
class FileChange:
    """One file install/uninstall writes. before/after None: absent. Symlinks: 'link -> T'."""

    path: str
    role: str  # config | dropin | template | front | link | backup | record
    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        a = [] if self.before is None else self.before.splitlines(keepends=True)
        b = [] if self.after is None else self.after.splitlines(keepends=True)
        lines = difflib.unified_diff(
            a,
            b,
            fromfile="/dev/null" if self.before is None else self.path,
            tofile="/dev/null" if self.after is None else self.path,
        )
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@dataclass
class Node:
    """The containerd a node runs, as install sees it."""

    kind: str  # "containerd" | "k3s" | "rke2"
    config: Path  # the file containerd reads (k3s/RKE2: the rendered config.toml)
    containerd: str | None  # the binary (None on k3s/RKE2: containerd is built into k3s)
    version: str | None  # containerd X.Y.Z, when the binary was asked
    config_version: int  # the main file's `version`: 2 (1.x layout), 3 or 4 (2.x)
    effective: dict[str, Any]  # `containerd config dump` (k3s: the rendered config)

    @property
    def daemon_major(self) -> int | None:
        return None if self.version is None else ctrd.parse_version(self.version)[0]

    @property
    def native_version(self) -> int:
        """The version this containerd migrates every file to (what its dump says)."""
        if self.version is None:
            return self.config_version
        return ctrd.default_config_version(self.version)


@dataclass
class Result:
    """What install/uninstall did (or, dry_run, would do)."""

    action: str
    kind: str
    config: str
    containerd_version: str | None
    config_version: int
    mode: str | None  # append | dropin | template (where the runtime block lives)
    target: str | None
    dry_run: bool
    changes: list[FileChange] = field(default_factory=list)
    verified: bool | None = None  # None: not checked (dry run, k3s template)
    restarted: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.changes)

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes if c.changed and c.role != "backup")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["changed"] = self.changed
        data["changes"] = [
            {"path": c.path, "role": c.role, "changed": c.changed} for c in self.changes
        ]
        data["diff"] = self.diff()
        return data


# --- the node -----------------------------------------------------------------------------


def detect_node(
    config: str | os.PathLike[str] | None = None, containerd: str = "containerd"
) -> Node:
    """Which containerd this node runs, which config it reads and what is in effect now."""
    kind, path = _locate(config)
    if kind != "containerd":
        rendered = path.parent / "config.toml"
        effective = _read_toml(rendered, missing=f"{kind} renders {rendered} when it first starts")
        cv = _layout_version(effective, rendered)
        return Node(kind, rendered, None, None, cv, effective)
    binary = shutil.which(containerd) or containerd
    version = ctrd.detect_version(binary)
    if path.exists():
        # the file's version first: a newer file than this containerd reads gets its own
        # message, not the daemon's refusal
        cv = _layout_version(_read_toml(path), path, version)
        effective = tomllib.loads(run([binary, "--config", str(path), "config", "dump"]))
    else:
        effective = tomllib.loads(run([binary, "config", "default"]))
        cv = ctrd.default_config_version(version)
    return Node(kind, path, binary, version, cv, effective)


def _locate(config: str | os.PathLike[str] | None) -> tuple[str, Path]:
    if config is None:
        for kind, d in RANCHER_DIRS.items():
            if Path(d).is_dir():
                return kind, Path(d) / "config.toml"
        return "containerd", Path(DEFAULT_CONFIG)
    path = Path(config).absolute()
    if path.name.endswith(".tmpl") or path.parent.as_posix().endswith("/agent/etc/containerd"):
        return ("rke2" if "rke2" in path.parts else "k3s"), path
    return "containerd", path


def _layout_version(data: dict[str, Any], path: Path, containerd_version: str | None = None) -> int:
    """The `version` of a config file floxk is to extend, checked against what the daemon
    reads (containerd_version None: k3s/RKE2, whose containerd floxk cannot ask)."""
    version = data.get("version", 1)  # containerd reads a file without one as version 1
    if containerd_version:
        readable = ctrd.readable_config_versions(containerd_version)
        who = f"containerd {containerd_version} reads"
    else:
        readable = tuple(ctrd.CRI_RUNTIME_PLUGIN)
        who = "floxk installs into"
    if version in readable:
        return version
    span = f"s {readable[0]} to {readable[-1]}" if len(readable) > 1 else f" {readable[0]}"
    message = f"{path}: config version {version!r} is not supported ({who} config version{span})"
    if not isinstance(version, int) or isinstance(version, bool):
        hint = "`version` must be a number: the one containerd's `config default` writes"
    elif version > readable[-1]:
        hint = (
            f"this file is for a newer containerd than {containerd_version}: upgrade containerd"
            " (or pass --containerd with the binary the node runs)"
            if containerd_version and version in ctrd.CRI_RUNTIME_PLUGIN
            else "upgrade floxk to a release that knows this config version"
        )
    elif containerd_version is None:
        hint = (
            "k3s/RKE2 render this file: floxk supports releases whose rendered config.toml"
            " says version 2 or newer (upgrade k3s/RKE2)"
        )
    elif ctrd.parse_version(containerd_version)[0] >= 2:
        hint = (
            f"`containerd --config {path} config migrate > {path}.new` writes it as version"
            f" {readable[-1]}; check it, move it into place, then install again"
        )
    else:
        hint = (
            "containerd 1.x: put `version = 2` at the top and use full plugin ids"
            ' (e.g. [plugins."io.containerd.grpc.v1.cri"]), then install again'
        )
    raise ConfigError(message, hint=hint)


def _read_toml(path: Path, *, missing: str | None = None) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", hint=missing) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e


def _table(data: Any, *keys: str) -> dict[str, Any]:
    """data[key][key]...; {} where a level is missing or is not a table (a config k3s
    rendered is read as it is: what does not fit holds nothing of ours)."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def cri_table(config: dict[str, Any]) -> dict[str, Any]:
    """The CRI runtime plugin's table of a config dict, under the id of its own `version`.

    A version floxk does not know is an error, not a guess: a table looked up under the
    wrong id reads as "no runtimes", which would make install roll back (or uninstall miss)
    for the wrong reason.
    """
    version = config.get("version", 1)
    known = isinstance(version, int) and not isinstance(version, bool)
    plugin = ctrd.CRI_RUNTIME_PLUGIN.get(version) if known else None
    if plugin is None:
        raise ConfigError(
            f"config version {version!r} is not one floxk knows"
            f" ({', '.join(str(v) for v in ctrd.CRI_RUNTIME_PLUGIN)})",
            hint="upgrade floxk, or pass --containerd with the binary the node runs",
        )
    return _table(config, "plugins", plugin)


def runtimes(config: dict[str, Any]) -> dict[str, Any]:
    return _table(cri_table(config), "containerd", "runtimes")


def default_runc_options(effective: dict[str, Any]) -> dict[str, Any]:
    """options of the node's default runc runtime (default_runtime_name, else `runc`)."""
    table = _table(cri_table(effective), "containerd")
    rts = _table(table, "runtimes")
    name = table.get("default_runtime_name") or "runc"
    runtime = _table(rts, name) if isinstance(name, str) and name != ctrd.FLOX_RUNTIME else {}
    if not runtime or runtime.get("runtime_type", ctrd.RUNC_V2) != ctrd.RUNC_V2:
        runtime = _table(rts, "runc")
    return _table(runtime, "options")


def find_real_runc(effective: dict[str, Any], runc: str | None = None) -> str:
    """The runc the node's pods use: --runc, the runc runtime's BinaryName, node.toml, PATH."""
    binary = default_runc_options(effective).get("BinaryName")
    candidates = [runc, binary if isinstance(binary, str) else None]
    for cand in candidates:
        if cand:
            if not os.path.isabs(cand):
                cand = shutil.which(cand) or cand
            if not (os.path.isfile(cand) and os.access(cand, os.X_OK)):
                raise ConfigError(
                    f"runc {cand!r} is not an executable file", hint="pass --runc PATH"
                )
            return os.path.realpath(cand)
    node = load_node_config()
    found = node.runc or find_program("runc")
    if not found:
        raise ConfigError("no runc found on PATH", hint="install runc or pass --runc PATH")
    return os.path.realpath(found)


# --- rendering ----------------------------------------------------------------------------


def render_node_front(bin_dir: str, python: str) -> str:
    """The sh front for a bin_dir: pass-through to bin_dir/real-runc, slow path to the zipapp."""
    return render_front(
        f"{bin_dir}/{REAL_RUNC_LINK}",
        python_argv(python, "shim.runc:main", f"{bin_dir}/{RUNC_NAME}"),
    )


def render_node_shim_front(bin_dir: str, python: str, runc_v2_shim: str) -> str:
    """The wrapper shim's sh front for a bin_dir: exec runc_v2_shim, prefetch from the zipapp."""
    zipapp = f"{bin_dir}/{SHIM_NAME}"
    prefetch = python_argv(python, "shim.wrapper:prefetch_main", zipapp)
    return render_shim_front(runc_v2_shim, prefetch, [python, "-I", "-S", zipapp])


def find_runc_v2_shim(node: Node) -> str | None:
    """containerd-shim-runc-v2 as this node's containerd runs it: node.toml's runc_v2_shim,
    else the one beside the containerd binary, else the first on PATH (never a floxk front).
    None on k3s/RKE2: their shims live in a data dir that changes with each k3s version, so
    there the zipapp finds it on containerd's PATH when it runs."""
    if node.kind != "containerd":
        return None
    configured = load_node_config().runc_v2_shim
    if configured:
        return configured
    if node.containerd:
        beside = Path(node.containerd).resolve().parent / RUNC_V2_SHIM
        if os.access(beside, os.X_OK):
            return str(beside)
    found = find_program(RUNC_V2_SHIM)
    return os.path.abspath(found) if found else None


def render_block(
    layout_version: int,
    *,
    shim_path: str,
    front_path: str,
    systemd_cgroup: bool,
    runc_root: str | None = None,
    preamble: str = "",
    kept_runtimes: dict[str, Any] | None = None,
) -> str:
    """The marked block holding the flox runtime table in a config of that layout version.

    kept_runtimes: runtimes to repeat as they are in effect (containerd 1.x drops its
    built-in runc runtime as soon as a config lists any runtime: see _builtin_runtimes).
    """
    table = ctrd.flox_runtime_table(
        shim_path=shim_path,
        runc_path=front_path,
        systemd_cgroup=systemd_cgroup,
        runc_root=runc_root,
    )
    plugin = ctrd.CRI_RUNTIME_PLUGIN[layout_version]
    listed = {**(kept_runtimes or {}), ctrd.FLOX_RUNTIME: table}
    body = ctrd.to_toml({"plugins": {plugin: {"containerd": {"runtimes": listed}}}})
    note = ""
    if kept_runtimes:
        note = (
            "# containerd 1.x forgets its built-in runtimes once a config lists one, so"
            f" {', '.join(sorted(kept_runtimes))} is repeated here as `config dump` showed it\n"
        )
    return (
        f"{BEGIN}, written by `floxk shim install`; `floxk shim uninstall` removes it\n"
        f"{note}{preamble}{body}{END}\n"
    )


def strip_block(text: str) -> tuple[str, bool]:
    """text without floxk's block and the blank line install put before it; found?"""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(BEGIN)), None)
    if start is None:
        return text, False
    end = next((i for i in range(start, len(lines)) if lines[i].rstrip("\n") == END), None)
    if end is None:
        raise ConfigError(
            f"floxk's block has no end line ({END!r})",
            hint="the file was edited by hand: remove the block between the floxk markers",
        )
    head, tail = "".join(lines[:start]), "".join(lines[end + 1 :])
    if head.endswith("\n\n"):
        head = head[:-1]
    return head + tail, True


def with_block(text: str, block: str) -> str:
    """text with floxk's block at the end (replacing an earlier one), after a blank line."""
    text, _ = strip_block(text)
    if not text:
        return block
    return text + ("\n" if text.endswith("\n") else "\n\n") + block


# --- install ------------------------------------------------------------------------------


def install(
    *,
    config: str | os.PathLike[str] | None = None,
    containerd: str = "containerd",
    bin_dir: str = DEFAULT_BIN_DIR,
    python: str | None = None,
    runc: str | None = None,
    restart: bool = False,
    dry_run: bool = False,
    systemd_dir: str | None = None,
) -> Result:
    """Register the flox runtime with this node's containerd (see the module docstring).

    systemd_dir: where the GC timer's units go (default: /etc/systemd/system when systemd
    runs the node, else none)."""
    node = detect_node(config, containerd)
    bin_dir = os.path.abspath(bin_dir)
    for name in (SHIM_NAME, RUNC_NAME):
        p = Path(bin_dir, name)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ConfigError(
                f"{p} is missing or not executable",
                hint="install the floxk-shim package, or copy the zipapps from `floxk shim build`"
                " there (or pass --bin-dir)",
            )
    python = python or _default_python()
    real_runc = find_real_runc(node.effective, runc)
    front_path = f"{bin_dir}/{FRONT_NAME}"
    runc_v2 = find_runc_v2_shim(node)
    shim_path = f"{bin_dir}/{SHIM_FRONT_NAME}" if runc_v2 else f"{bin_dir}/{SHIM_NAME}"
    # flox containers are runc containers: same cgroup driver, same runc state dir
    runc_options = default_runc_options(node.effective)
    systemd = bool(runc_options.get("SystemdCgroup", False))
    runc_root = runc_options.get("Root") or None

    mode, target, layout = _target(node)
    existing = _block_owner(node)
    if existing is not None and existing[1] != target:
        mode, target, layout = existing
    before = _read_text(target)
    if existing is None and ctrd.FLOX_RUNTIME in runtimes(node.effective):
        raise ConfigError(
            f"containerd already has a {ctrd.FLOX_RUNTIME!r} runtime that floxk did not write"
            f" ({node.config} or a file it imports)",
            hint="remove that runtime table first, then run install again",
        )

    created = before is None or strip_block(before)[0] == ""
    preamble = ""
    if mode == "template" and created:
        preamble = f"{K3S_BASE}\n\n"
    elif created:
        preamble = f"version = {layout}\n\n"
    block = render_block(
        layout,
        shim_path=shim_path,
        front_path=front_path,
        systemd_cgroup=systemd,
        runc_root=runc_root,
        preamble=preamble,
        kept_runtimes=_builtin_runtimes(node, before),
    )
    after = with_block(before or "", block)

    changes = [
        FileChange(
            front_path, "front", _read_text(Path(front_path)), render_node_front(bin_dir, python)
        ),
        FileChange(
            f"{bin_dir}/{REAL_RUNC_LINK}", "link", _read_link(bin_dir), f"link -> {real_runc}"
        ),
    ]
    if runc_v2:
        changes.append(
            FileChange(
                shim_path,
                "front",
                _read_text(Path(shim_path)),
                render_node_shim_front(bin_dir, python, runc_v2),
            )  # fmt: skip
        )
    changes.append(FileChange(str(target), _file_role(mode), before, after))
    own_config = config is None or os.path.realpath(config) == DEFAULT_CONFIG
    units = gc_timer_changes(bin_dir, python, systemd_dir, default=own_config)
    changes += units
    backup = Path(str(target) + BACKUP_SUFFIX)
    if (
        mode != "dropin"
        and before is not None
        and not strip_block(before)[1]
        and not backup.exists()
    ):
        changes.append(FileChange(str(backup), "backup", None, before))
    result = Result(
        "install", node.kind, str(node.config), node.version, node.config_version, mode,
        str(target), dry_run, changes,
    )  # fmt: skip
    result.notes.append(
        f"real runc: {real_runc}; SystemdCgroup = {str(systemd).lower()}"
        + (f"; Root = {runc_root}" if runc_root else "")
    )
    result.notes.append(
        f"containerd-shim-runc-v2: {runc_v2}"
        if runc_v2
        else f"no {RUNC_V2_SHIM} found: runtime_path is the {SHIM_NAME} zipapp"
    )
    if dry_run:
        return result

    record = _read_record(bin_dir)
    for c in changes:
        if (
            c.role in ("front", "link", "unit")
            and c.before is None
            and c.path not in record["created"]
        ):
            record["created"].append(c.path)
    new_dir = str(target.parent)
    if mode == "dropin" and not target.parent.exists() and new_dir not in record["created_dirs"]:
        record["created_dirs"].append(new_dir)
    if result.changed:
        record_change = FileChange(
            f"{bin_dir}/{RECORD_NAME}", "record", _read_text(Path(bin_dir, RECORD_NAME)),
            json.dumps(record, indent=2, sort_keys=True) + "\n",
        )  # fmt: skip
        changes.append(record_change)
    applied = _apply(changes)
    if mode == "template":
        result.notes.append(f"{node.kind} renders {target.name} into config.toml when it starts")
    else:
        try:
            verify(node, shim_path=shim_path, front_path=front_path)
        except FloxkError:
            _undo(applied)
            raise
        result.verified = True
    if units:
        result.notes.append(_reload_systemd(systemd_dir, start=True))
    if restart:
        result.restarted = restart_containerd(node)
    elif result.changed:
        result.notes.append("containerd was not restarted: it reads the change when it restarts")
    return result


def _builtin_runtimes(node: Node, before: str | None) -> dict[str, Any]:
    """On containerd 1.x: the runtimes in effect that the target file does not list itself.

    They are containerd's built-in defaults (runc), and 1.x replaces the whole runtimes map
    with the config's as soon as the config lists one: without repeating them, adding flox
    would take runc away and CRI would refuse to load (`no corresponding runtime configured
    ... default_runtime_name`). Seen on 1.6 and 1.7 with a CRI section in an imported file.
    """
    if node.version is None or ctrd.parse_version(node.version)[0] != 1:
        return {}
    own_file = tomllib.loads(strip_block(before)[0]) if before else {}
    own = runtimes({**own_file, "version": 2})  # 1.x: its files use the version 2 ids
    return {
        name: table
        for name, table in runtimes(node.effective).items()
        if name != ctrd.FLOX_RUNTIME and name not in own
    }


def verify(node: Node, *, shim_path: str, front_path: str) -> None:
    """The node's own `containerd config dump` must show the flox runtime as written, and
    every runtime that was in effect before."""
    assert node.containerd is not None
    dump = tomllib.loads(run([node.containerd, "--config", str(node.config), "config", "dump"]))
    lost = sorted(set(runtimes(node.effective)) - set(runtimes(dump)))
    if lost:
        raise ConfigError(
            f"with the flox runtime added, containerd would lose runtime(s) {', '.join(lost)};"
            " the files were put back as they were",
            hint="list those runtimes in the file that holds the CRI settings, then install again",
        )
    flox = runtimes(dump).get(ctrd.FLOX_RUNTIME)
    got = (
        None
        if flox is None
        else (flox.get("runtime_path"), (flox.get("options") or {}).get("BinaryName"))
    )
    if got != (shim_path, front_path):
        raise ConfigError(
            f"`containerd config dump` of {node.config} does not show the flox runtime as written"
            f" (runtime_path, BinaryName = {got}); the files were put back as they were",
            hint=NO_RUNTIME_HINT,
        )


def _target(node: Node) -> tuple[str, Path, int]:
    """(mode, file, layout version) where a fresh install puts the block."""
    if node.kind != "containerd":
        # the block is appended to k3s's base, so it takes the rendered config's version
        name = "config-v3.toml.tmpl" if node.config_version >= 3 else "config.toml.tmpl"
        return "template", node.config.parent / name, node.config_version
    main = _read_toml(node.config) if node.config.exists() else {}
    patterns = main.get("imports", [])
    if (node.daemon_major or 0) >= 2:  # 2.x merges imports table by table, any file version
        for pattern in patterns:
            path = _abs_import(node.config, pattern)
            if glob.has_magic(path) and fnmatch.fnmatch(DROPIN_NAME, os.path.basename(path)):
                return "dropin", Path(os.path.dirname(path)) / DROPIN_NAME, node.native_version
        return "append", node.config, node.config_version
    target, layout = node.config, node.config_version
    plugin = ctrd.CRI_RUNTIME_PLUGIN[2]
    for f in _imported_files(node.config, patterns):
        data = _read_toml(f)
        plugins = data.get("plugins")
        if isinstance(plugins, dict) and plugin in plugins:
            target, layout = f, _layout_version(data, f, node.version)
    return "append", target, layout


def _file_role(mode: str) -> str:
    """FileChange.role of the file holding the block: config | dropin | template."""
    return "config" if mode == "append" else mode


def _block_owner(node: Node) -> tuple[str, Path, int] | None:
    """Where floxk's block already is, if anywhere install could have put it."""
    for mode, path in _candidates(node):
        text = _read_text(path)
        try:
            found = text is not None and strip_block(text)[1]
        except ConfigError as e:  # strip_block does not know the file
            raise ConfigError(f"{path}: {e.message}", hint=e.hint) from None
        if found:
            layout = node.config_version
            if mode != "template":
                layout = _read_toml(path).get("version", layout)
            return mode, path, layout
    return None


def _candidates(node: Node) -> list[tuple[str, Path]]:
    if node.kind != "containerd":
        return [
            ("template", node.config.parent / n)
            for n in ("config-v3.toml.tmpl", "config.toml.tmpl")
        ]
    out: list[tuple[str, Path]] = [("append", node.config)]
    main = _read_toml(node.config) if node.config.exists() else {}
    for f in _imported_files(node.config, main.get("imports", [])):
        out.append(("dropin" if f.name == DROPIN_NAME else "append", f))
    return out


def _abs_import(config: Path, pattern: str) -> str:
    return pattern if os.path.isabs(pattern) else os.path.join(config.parent, pattern)


def _imported_files(config: Path, patterns: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        path = _abs_import(config, pattern)
        files += (
            [Path(p) for p in sorted(glob.glob(path))] if glob.has_magic(path) else [Path(path)]
        )
    return [f for f in files if f.exists()]


# --- the GC timer (systemd) ------------------------------------------------------------------

GC_SERVICE = "floxk-gc.service"
GC_TIMER = "floxk-gc.timer"
SYSTEMD_DIR = "/etc/systemd/system"

_GC_SERVICE_TEXT = """\
# written by floxk shim install; removed by uninstall
[Unit]
Description=floxk: free unused environments when the store's disk is full (node.toml [gc])

[Service]
Type=oneshot
ExecStart={python} -I -S {node} gc --auto
Nice=19
IOSchedulingClass=idle
"""

_GC_TIMER_TEXT = """\
# written by floxk shim install; removed by uninstall
[Unit]
Description=floxk: check the store's disk for automatic GC

[Timer]
OnBootSec=2min
OnUnitActiveSec={interval}s
AccuracySec=30s

[Install]
WantedBy=timers.target
"""


def _systemd_dir(systemd_dir: str | None, *, default: bool = True) -> str | None:
    if systemd_dir is not None:
        return systemd_dir
    return SYSTEMD_DIR if default and os.path.isdir("/run/systemd/system") else None


def gc_timer_changes(
    bin_dir: str, python: str, systemd_dir: str | None, *, default: bool = True
) -> list[FileChange]:
    """The GC timer's units (and its timers.target.wants link): in `systemd_dir`, else in
    /etc/systemd/system when systemd runs and `default` (the node's own containerd config
    is being installed, not one under a test's or a chroot's directory)."""
    directory = _systemd_dir(systemd_dir, default=default)
    node_app = f"{bin_dir}/{NODE_NAME}"
    if directory is None or not os.path.isfile(node_app):
        return []
    try:
        interval = load_node_config().gc.interval
    except FloxkError:
        interval = 300.0  # node.toml is checked where it is used; the timer only starts it
    wants = f"{directory}/timers.target.wants/{GC_TIMER}"
    try:
        link_before = "link -> " + os.readlink(wants)
    except OSError:
        link_before = None
    service = _GC_SERVICE_TEXT.format(python=python, node=node_app)
    timer = _GC_TIMER_TEXT.format(interval=int(interval))
    return [
        FileChange(f"{directory}/{GC_SERVICE}", "unit", _read_text(Path(directory, GC_SERVICE)), service),
        FileChange(f"{directory}/{GC_TIMER}", "unit", _read_text(Path(directory, GC_TIMER)), timer),
        FileChange(wants, "unit", link_before, f"link -> ../{GC_TIMER}"),
    ]  # fmt: skip


def _reload_systemd(systemd_dir: str | None, *, start: bool) -> str:
    if systemd_dir is not None or _systemd_dir(None) is None or not shutil.which("systemctl"):
        return f"GC timer: units written ({GC_TIMER}); systemd picks them up on daemon-reload"
    _systemctl("daemon-reload")
    if start:
        _systemctl("start", GC_TIMER)
    return f"GC timer: {GC_TIMER} started"


def _systemctl(*args: str) -> None:
    if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
        subprocess.run(["systemctl", *args], check=False, capture_output=True)


# --- flox containers still running ----------------------------------------------------------


def live_flox_tasks(node: Node, bin_dir: str) -> list[dict[str, Any]]:
    """Tasks of containerd's runc-v2 shims that run through floxk's fronts: their shim
    binary or runc BinaryName is in `bin_dir` (containerd keeps both per task, under
    <state>/io.containerd.runtime.v2.task/<namespace>/<id>/), and their process is alive."""
    state = node.effective.get("state")
    if not isinstance(state, str) or not state:  # containerd's default; it refuses others
        state = "/run/containerd"
    tasks = Path(state) / "io.containerd.runtime.v2.task"
    found = []
    for task in sorted(tasks.glob("*/*")) if tasks.is_dir() else []:
        if not _runs_through(task, bin_dir):
            continue
        pid = _read_text(task / "init.pid")
        if pid is not None and pid.strip().isdigit() and not _alive(int(pid)):
            continue  # its process is gone: nothing of it needs the fronts any more
        found.append({"namespace": task.parent.name, "id": task.name, "bundle": str(task)})
    return found


def _runs_through(task: Path, bin_dir: str) -> bool:
    prefix = bin_dir.rstrip("/") + "/"
    shim = _read_text(task / "shim-binary-path") or ""
    if shim.startswith(prefix):
        return True
    try:
        options = json.loads(_read_text(task / "options.json") or "{}")
    except ValueError:
        return False
    binary = options.get("binary_name") or options.get("BinaryName") or ""
    return isinstance(binary, str) and binary.startswith(prefix)


# --- uninstall ----------------------------------------------------------------------------


def uninstall(
    *,
    config: str | os.PathLike[str] | None = None,
    containerd: str = "containerd",
    bin_dir: str = DEFAULT_BIN_DIR,
    restart: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> Result:
    """Remove what install added; files it appended to get their original bytes back.

    Refused (InUseError listing them) while flox containers run on this node: without the
    fronts they could no longer be exec'd or stopped. `force` removes it anyway."""
    node = detect_node(config, containerd)
    bin_dir = os.path.abspath(bin_dir)
    live = live_flox_tasks(node, bin_dir)
    if live and not force and not dry_run:
        raise InUseError(
            f"{len(live)} flox container(s) still run on this node: "
            + ", ".join(f"{t['namespace']}/{t['id']}" for t in live[:10])
            + (" ..." if len(live) > 10 else ""),
            hint="stop or drain them first (kubectl drain), or pass --force: their exec, "
            "stop and delete then fail, and their workloads keep running unseen",
        )
    owner = _block_owner(node)
    result = Result(
        "uninstall", node.kind, str(node.config), node.version, node.config_version,
        owner[0] if owner else None, str(owner[1]) if owner else None, dry_run,
    )  # fmt: skip
    if owner is not None:
        mode, target, _ = owner
        before = _read_text(target) or ""
        stripped, _ = strip_block(before)
        backup = Path(str(target) + BACKUP_SUFFIX)
        original = _read_text(backup)
        after: str | None = stripped
        if original is not None and original in (stripped, stripped[:-1]):
            after = original  # untouched since install: the original bytes, exactly
        elif original is None and stripped == "":
            after = None  # install created the file
        elif original is not None:
            result.notes.append(f"{target} changed since install: kept those edits, left {backup}")
        result.changes.append(FileChange(str(target), _file_role(mode), before, after))
        if original is not None and after == original:
            result.changes.append(FileChange(str(backup), "backup", original, None))
    record = _read_record(bin_dir)
    link = f"{bin_dir}/{REAL_RUNC_LINK}"
    result.changes.append(FileChange(link, "link", _read_link(bin_dir), None))
    for path in record["created"]:
        if path != link:
            result.changes.append(FileChange(path, "front", _read_text(Path(path)), None))
    rec = Path(bin_dir, RECORD_NAME)
    result.changes.append(FileChange(str(rec), "record", _read_text(rec), None))
    if live:
        result.notes.append(
            f"{len(live)} flox container(s) still running"
            + (" (--force)" if force else ": uninstall will refuse without --force")
        )
    if dry_run:
        return result
    if any(c.role == "front" and c.path.endswith(GC_TIMER) for c in result.changes):
        _systemctl("stop", GC_TIMER)
    _apply(result.changes)
    for d in record["created_dirs"]:  # the drop-in dir install made, if nothing else is there
        try:
            os.rmdir(d)
        except OSError:
            pass
    if restart and owner is not None:
        result.restarted = restart_containerd(node)
    return result


# --- writing ------------------------------------------------------------------------------


def _apply(changes: list[FileChange]) -> list[FileChange]:
    """Write every changed file atomically; return what was applied (for _undo)."""
    applied = []
    try:
        for c in changes:
            if c.changed:
                _put(c.path, c.after, mode=0o755 if c.role == "front" else None)
                applied.append(c)
    except BaseException:
        _undo(applied)
        raise
    return applied


def _undo(applied: list[FileChange]) -> None:
    for c in reversed(applied):
        _put(c.path, c.before, mode=0o755 if c.role == "front" else None)


def _put(path: str, content: str | None, *, mode: int | None) -> None:
    p = Path(path)
    if content is None:
        if p.is_symlink() or p.exists():
            p.unlink()
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    if content.startswith("link -> "):
        tmp = p.with_name(f".{p.name}.floxk-tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(content.removeprefix("link -> "), tmp)
        os.replace(tmp, p)
        return
    if mode is None:
        mode = p.stat().st_mode & 0o7777 if p.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _read_link(bin_dir: str) -> str | None:
    try:
        return "link -> " + os.readlink(Path(bin_dir, REAL_RUNC_LINK))
    except (FileNotFoundError, OSError):
        return None


def _read_record(bin_dir: str) -> dict[str, Any]:
    text = _read_text(Path(bin_dir, RECORD_NAME))
    record = json.loads(text) if text else {}
    record.setdefault("created", [])
    record.setdefault("created_dirs", [])
    return record


def _default_python() -> str:
    """The node's own python3 for the front's slow path (a venv's python may go away)."""
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(cand, os.X_OK):
            out = run([cand, "-I", "-S", "-c", "import sys; print(sys.version_info >= (3, 11))"])
            if out.strip() == "True":
                return cand
    return sys.executable


# --- restart ------------------------------------------------------------------------------

SERVICE_UNITS = {
    "containerd": ("containerd",),
    "k3s": ("k3s", "k3s-agent"),
    "rke2": ("rke2-server", "rke2-agent"),
}


def restart_containerd(node: Node) -> dict[str, Any]:
    """Restart the service (systemd) or the plain containerd process reading node.config."""
    if shutil.which("systemctl"):
        for unit in SERVICE_UNITS[node.kind]:
            active = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
            if active.returncode == 0:
                run(["systemctl", "restart", unit])
                return {"how": "systemd", "unit": unit}
    pid = find_containerd_pid(node.config) if node.kind == "containerd" else None
    if pid is None:
        raise ConfigError(
            f"no running {node.kind} found to restart",
            hint="start it yourself: the flox runtime is configured",
        )
    return restart_process(pid)


def find_containerd_pid(config: Path) -> int | None:
    """A running containerd whose --config is `config` (or the default, when it has none)."""
    want = os.path.realpath(config)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != "containerd" or status == "Z":
            continue
        used = DEFAULT_CONFIG
        for i, a in enumerate(argv):
            if a in ("--config", "-c") and i + 1 < len(argv):
                used = argv[i + 1]
            elif a.startswith("--config="):
                used = a.split("=", 1)[1]
        try:
            if not os.path.isabs(used):  # relative to where that containerd was started
                used = os.path.join(os.readlink(entry / "cwd"), used)
        except OSError:
            continue
        if os.path.realpath(used) == want:
            return int(entry.name)
    return None


def restart_process(pid: int, timeout: float = 30) -> dict[str, Any]:
    """Stop a plain containerd process and start it again: same argv, environment, cwd, log."""
    proc = Path("/proc", str(pid))
    argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    env = dict(
        kv.decode().split("=", 1)
        for kv in (proc / "environ").read_bytes().split(b"\0")
        if b"=" in kv
    )
    cwd = os.readlink(proc / "cwd")
    out = os.readlink(proc / "fd" / "1") if (proc / "fd" / "1").exists() else ""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    log = open(out, "ab") if os.path.isabs(out) and os.path.isfile(out) else subprocess.DEVNULL
    try:
        new = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    finally:
        if log is not subprocess.DEVNULL:
            log.close()
    return {"how": "process", "old_pid": pid, "pid": new.pid, "argv": argv}


def _alive(pid: int) -> bool:
    try:
        state = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- floxk-node (the admin zipapp) --------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """floxk-node install|uninstall|realize|gc: the node side of `floxk shim`, without floxk."""
    ap = argparse.ArgumentParser(prog="floxk-node", description="floxk on a node (run as root).")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("install", "uninstall"):
        p = sub.add_parser(name, help=f"{name} the flox runtime in containerd's configuration")
        p.add_argument(
            "--config",
            help="containerd config (default: k3s/RKE2 dir, else /etc/containerd/config.toml)",
        )
        p.add_argument("--containerd", default="containerd", help="containerd binary")
        p.add_argument("--bin-dir", default=DEFAULT_BIN_DIR, help="where the zipapps are")
        p.add_argument("--restart", action="store_true", help="restart containerd afterwards")
        p.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "install":
            p.add_argument("--runc", help="the real runc (default: the node's runc runtime)")
            p.add_argument("--python", help="python3 for the front's slow path")
            p.add_argument("--systemd-dir", help="where the GC timer's units go (default:"
                           " /etc/systemd/system when systemd runs the node)")  # fmt: skip
        else:
            p.add_argument("--force", action="store_true",
                           help="even while flox containers run (they lose exec and stop)")  # fmt: skip
    p = sub.add_parser("realize", help="realize OWNER/NAME[:GEN] with node.toml's hubs and keys")
    p.add_argument("ref")
    p = sub.add_parser("gc", help="free environments and store paths no container uses")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument(
        "--auto",
        action="store_true",
        help="only at disk pressure (node.toml [gc]): least recently used first, down to the"
        " low mark (what the systemd timer runs)",
    )
    p = sub.add_parser("stats", help="what this node realized, created and collected")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument("--prometheus", metavar="FILE", help="also write node-exporter's textfile")
    a = ap.parse_args(argv)
    try:
        data = _run_command(a)
    except FloxkError as e:
        sys.stderr.write(f"error: {e.message}\n" + (f"hint: {e.hint}\n" if e.hint else ""))
        sys.exit(e.exit_code)
    print(json.dumps(data, indent=2, sort_keys=True) if isinstance(data, dict) else data)


def _run_command(a: argparse.Namespace) -> Any:
    if a.command in ("install", "uninstall"):
        kwargs = {"config": a.config, "containerd": a.containerd, "bin_dir": a.bin_dir,
                  "restart": a.restart, "dry_run": a.dry_run}  # fmt: skip
        if a.command == "install":
            result = install(**kwargs, runc=a.runc, python=a.python, systemd_dir=a.systemd_dir)
        else:
            result = uninstall(**kwargs, force=a.force)
        if a.json:
            return result.to_dict()
        return (result.diff() if a.dry_run else summary(result)).rstrip("\n")
    node = load_node_config()
    if a.command == "stats":
        from shim.core import stats

        data = stats.summary(node)
        if a.prometheus:
            stats.write_prometheus(a.prometheus, data)
        return data if a.output == "json" else stats.render(data)
    if a.command == "gc":
        from shim.core import gc

        if a.auto:
            return gc.collect_at_pressure(node, reason="timer")
        result = gc.collect(state_dir=node.state_dir, store_root=node.store_root, dry_run=a.dry_run)
        if not a.dry_run:
            gc.record_gc(node, {"reason": "manual", **result})
        return result
    from shim.core import hub
    from shim.core.annotations import EnvRef
    from shim.runc import realize_for  # the node's one gate: owner policy, signed record

    return str(realize_for(EnvRef(*hub.parse_ref(a.ref)), node).path)


def summary(result: Result) -> str:
    """A few human lines about a Result (the CLIs print this; JSON has everything)."""
    verb = {"install": "installed", "uninstall": "uninstalled"}[result.action]
    head = f"{verb}: {result.kind} {result.containerd_version or ''} config v{result.config_version}".rstrip()
    lines = [head.replace("  ", " ")]
    for c in result.changes:
        if c.changed:
            lines.append(f"  {'wrote' if c.after is not None else 'removed'} {c.path} ({c.role})")
    if not result.changed:
        lines.append("  nothing to change")
    if result.verified:
        lines.append("  verified with `containerd config dump`")
    if result.restarted:
        lines.append(f"  restarted: {result.restarted}")
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"
