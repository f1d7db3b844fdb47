"""The node as install sees it: which containerd, which config, what is in effect, where
floxk's block goes or already is, which flox containers still run."""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shim.core import containerd as ctrd
from shim.core.errors import ConfigError
from shim.core.node import find_program, load_node_config
from shim.core.proc import run
from shim.installer.files import _read_text
from shim.installer.layout import DEFAULT_CONFIG, DROPIN_NAME, RANCHER_DIRS, RUNC_V2_SHIM
from shim.installer.render import strip_block


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


def _default_python() -> str:
    """The node's own python3 for the front's slow path (a venv's python may go away)."""
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(cand, os.X_OK):
            out = run([cand, "-I", "-S", "-c", "import sys; print(sys.version_info >= (3, 11))"])
            if out.strip() == "True":
                return cand
    return sys.executable


def _alive(pid: int) -> bool:
    try:
        state = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
