"""containerd configs for installer tests: a line's own `config default`, edited line by line.

The installer never re-serializes a config, so its tests start from real generated text
(comments, quoting and layout of that line) and change only the keys a private daemon
needs: its own root, state, sockets (version 4: the server plugin tables), CNI, opt and
runc state dirs, the suite's pause image, NRI off and restrict_oom_score_adj where the host
needs it. (containerd-shim-runc-v2 still puts its sockets in /run/containerd/s: that path
is compiled in; they go when the shim exits.)

Host state: containerd 2.2+ writes `imports = ['/etc/containerd/conf.d/*.toml']` into its
default config, and the installer puts its drop-in where a config's imports point. So
`default_config(line, etc)` rewrites that one line to the test's own `etc/conf.d`, and
`dump()` refuses (fails the test, loudly) a config that would still import a file outside
the test's directory: a test must never read, or make the installer write, host files.
"""

from __future__ import annotations

import glob
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from shim.core import containerd as ctrd

HOST_DROPINS = "/etc/containerd/conf.d/*.toml"


def line_default_config(containerd: Path) -> str:
    """The line's `containerd config default`, as it prints it (host paths and all)."""
    return subprocess.run(
        [str(containerd), "config", "default"], check=True, capture_output=True, text=True
    ).stdout


def default_config(containerd: Path, etc: Path) -> str:
    """The line's default config with its imports (2.2+: the host's conf.d) moved to etc."""
    text = line_default_config(containerd)
    imports = tomllib.loads(text).get("imports", [])
    if not imports:
        return text
    private = [os.path.join(etc, p.removeprefix("/etc/containerd/")) for p in imports]
    outside = [p for p in private if not p.startswith(f"{etc}/")]
    if outside:
        pytest.fail(f"{containerd} config default imports {outside}: nodeconf cannot move those")
    return set_key(text, None, "imports", "[" + ", ".join(q(p) for p in private) + "]")


def imported_patterns(config: Path) -> list[str]:
    """Every import pattern of config and of the files it imports (absolute), in order."""
    out: list[str] = []
    pending, seen = [config], set()
    while pending:
        f = pending.pop(0)
        if f in seen or not f.exists():
            continue
        seen.add(f)
        for pattern in tomllib.loads(f.read_text()).get("imports", []):
            path = pattern if os.path.isabs(pattern) else os.path.join(f.parent, pattern)
            out.append(path)
            pending += (
                [Path(p) for p in sorted(glob.glob(path))] if glob.has_magic(path) else [Path(path)]
            )
    return out


def assert_private(config: Path, root: Path | None = None) -> None:
    """Fail the test if config (or a file it imports) imports anything outside root."""
    root = root or config.parent
    outside = [
        p for p in imported_patterns(config) if not os.path.abspath(p).startswith(f"{root}/")
    ]
    if outside:
        pytest.fail(
            f"{config} imports {outside}, outside the test's directory {root}: the test would"
            " read host state (and install would write there); build the config with"
            " nodeconf.default_config(line, etc)",
            pytrace=False,
        )


def dump(containerd: Path, config: Path, root: Path | None = None) -> str:
    """`containerd config dump` of config, after assert_private(config, root)."""
    assert_private(config, root)
    return subprocess.run(
        [str(containerd), "--config", str(config), "config", "dump"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def set_key(text: str, table: str | None, key: str, value: str) -> str:
    """Set `key = value` (value as TOML text) in [table] (None: the top level) of `text`."""
    lines = text.splitlines(keepends=True)
    start = 0
    if table is not None:
        want = f"[{table}]".replace("'", '"')
        start = next(
            (i + 1 for i, line in enumerate(lines) if line.strip().replace("'", '"') == want),
            None,
        )
        if start is None:  # a table this line's default does not write: add it at the end
            sep = "" if not lines or lines[-1].endswith("\n") else "\n"
            return "".join(lines) + f"{sep}\n[{table}]\n  {key} = {value}\n"
    end = next(
        (i for i in range(start, len(lines)) if lines[i].lstrip().startswith("[")), len(lines)
    )
    for i in range(start, end):
        stripped = lines[i].lstrip()
        if stripped.startswith(f"{key} =") or stripped.startswith(f"{key}="):
            indent = lines[i][: len(lines[i]) - len(stripped)]
            lines[i] = f"{indent}{key} = {value}\n"
            return "".join(lines)
    indent = "  " * (table.count(".") if table else 0)
    lines.insert(start, f"{indent}{key} = {value}\n")
    return "".join(lines)


def q(s: str) -> str:
    return '"' + s + '"'


def private_main(text: str, version: str, d: Path) -> str:
    """Top-level and non-CRI edits: this daemon's own dirs and sockets, NRI off."""
    text = set_key(text, None, "root", q(str(d / "root")))
    text = set_key(text, None, "state", q(str(d / "state")))
    if ctrd.default_config_version(version) >= 4:
        # version 4: the server settings are plugins, and ttrpc's address is no longer
        # derived from grpc's (left empty it is the host's /run/containerd one)
        server = 'plugins."io.containerd.server.v1.{}"'
        text = set_key(text, server.format("grpc"), "address", q(str(d / "containerd.sock")))
        text = set_key(text, server.format("ttrpc"), "address", q(str(d / "containerd.ttrpc")))
    else:
        text = set_key(text, "grpc", "address", q(str(d / "containerd.sock")))
    text = set_key(text, 'plugins."io.containerd.internal.v1.opt"', "path", q(str(d / "opt")))
    if '"io.containerd.nri.v1.nri"' in text.replace("'", '"'):
        text = set_key(text, 'plugins."io.containerd.nri.v1.nri"', "disable", "true")
    return text


def cri_settings(
    version: str, d: Path, pause: str, restrict: bool, runc_root: bool = True
) -> dict[str, dict[str, str]]:
    """table -> {key: TOML value} of the CRI settings a private daemon needs on this line.

    runc_root: the runc runtime keeps its state in d, not the host's /run/containerd/runc
    (install copies Root to the flox runtime); False leaves the runtimes to the defaults.
    """
    r = "true" if restrict else "false"
    runc = {"Root": q(str(d / "runc-state"))}
    if ctrd.config_version(version) == 2:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return {
            cri: {
                "sandbox_image": q(pause),
                "restrict_oom_score_adj": r,
                "disable_apparmor": "true",
            },
            f"{cri}.cni": {"bin_dir": q(str(d / "cni-bin")), "conf_dir": q(str(d / "cni-conf"))},
        } | _runc_tables(cri, runc, runc_root)
    rt = 'plugins."io.containerd.cri.v1.runtime"'
    return {
        'plugins."io.containerd.cri.v1.images".pinned_images': {"sandbox": q(pause)},
        rt: {"restrict_oom_score_adj": r, "disable_apparmor": "true"},
        f"{rt}.cni": {"bin_dirs": f"[{q(str(d / 'cni-bin'))}]", "conf_dir": q(str(d / "cni-conf"))},
    } | _runc_tables(rt, runc, runc_root)


def _runc_tables(plugin: str, options: dict[str, str], wanted: bool) -> dict[str, dict[str, str]]:
    """The runc runtime, whole (an imported CRI section on 1.x replaces the built-in one)."""
    if not wanted:
        return {}
    runc = f"{plugin}.containerd.runtimes.runc"
    return {runc: {"runtime_type": q(ctrd.RUNC_V2)}, f"{runc}.options": options}


def node_config(version: str, default: str, d: Path, pause: str, restrict: bool) -> str:
    """The line's default config, made private to `d`, CRI settings edited in place."""
    text = private_main(default, version, d)
    for table, keys in cri_settings(version, d, pause, restrict).items():
        for key, value in keys.items():
            text = set_key(text, table, key, value)
    return text


def node_config_with_imports(
    version: str,
    default: str,
    d: Path,
    pause: str,
    restrict: bool,
    etc: Path | None = None,
    runc_root: bool = True,
) -> dict[Path, str]:
    """Main config with an `imports` line; the CRI settings live in the imported file.

    1.x: imports = [<d>/node.d/cri.toml] (an import replaces the whole CRI section there, so
    the file floxk must extend is that one); 2.x: imports = [<d>/conf.d/*.toml], the >= 2.2
    shape (imports merge table by table), with the settings in conf.d/10-node.toml.
    The config files go to `etc` (default: d), the daemon's own dirs under d.
    """
    cv = ctrd.config_version(version)
    etc = etc or d
    if cv == 2:
        imported, pattern = etc / "node.d" / "cri.toml", str(etc / "node.d" / "cri.toml")
    else:
        imported, pattern = etc / "conf.d" / "10-node.toml", str(etc / "conf.d" / "*.toml")
    main = set_key(private_main(default, version, d), None, "imports", f"[{q(pattern)}]")
    body = [f"# node settings kept apart from the main config\nversion = {cv}\n"]
    for table, keys in cri_settings(version, d, pause, restrict, runc_root).items():
        body.append(f"\n[{table}]\n" + "".join(f"  {k} = {v}\n" for k, v in keys.items()))
    return {etc / "config.toml": main, imported: "".join(body)}
