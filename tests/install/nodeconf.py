"""containerd configs for installer tests: a line's own `config default`, edited line by line.

The installer never re-serializes a config, so its tests start from real generated text
(comments, quoting and layout of that line) and change only the keys a private daemon
needs: its own root, state, socket, CNI and opt dirs, the suite's pause image, NRI off and
restrict_oom_score_adj where the host needs it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from shim import containerd as ctrd


def default_config(containerd: Path) -> str:
    return subprocess.run(
        [str(containerd), "config", "default"], check=True, capture_output=True, text=True
    ).stdout


def dump(containerd: Path, config: Path) -> str:
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
            i + 1 for i, line in enumerate(lines) if line.strip().replace("'", '"') == want
        )
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
    """Top-level and non-CRI edits: this daemon's own dirs and socket, NRI off."""
    text = set_key(text, None, "root", q(str(d / "root")))
    text = set_key(text, None, "state", q(str(d / "state")))
    text = set_key(text, "grpc", "address", q(str(d / "containerd.sock")))
    text = set_key(text, 'plugins."io.containerd.internal.v1.opt"', "path", q(str(d / "opt")))
    if '"io.containerd.nri.v1.nri"' in text.replace("'", '"'):
        text = set_key(text, 'plugins."io.containerd.nri.v1.nri"', "disable", "true")
    return text


def cri_settings(version: str, d: Path, pause: str, restrict: bool) -> dict[str, dict[str, str]]:
    """table -> {key: TOML value} of the CRI settings a private daemon needs on this line."""
    r = "true" if restrict else "false"
    if ctrd.config_version(version) == 2:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return {
            cri: {
                "sandbox_image": q(pause),
                "restrict_oom_score_adj": r,
                "disable_apparmor": "true",
            },
            f"{cri}.cni": {"bin_dir": q(str(d / "cni-bin")), "conf_dir": q(str(d / "cni-conf"))},
        }
    rt = 'plugins."io.containerd.cri.v1.runtime"'
    return {
        'plugins."io.containerd.cri.v1.images".pinned_images': {"sandbox": q(pause)},
        rt: {"restrict_oom_score_adj": r, "disable_apparmor": "true"},
        f"{rt}.cni": {"bin_dirs": f"[{q(str(d / 'cni-bin'))}]", "conf_dir": q(str(d / "cni-conf"))},
    }


def node_config(version: str, default: str, d: Path, pause: str, restrict: bool) -> str:
    """The line's default config, made private to `d`, CRI settings edited in place."""
    text = private_main(default, version, d)
    for table, keys in cri_settings(version, d, pause, restrict).items():
        for key, value in keys.items():
            text = set_key(text, table, key, value)
    return text


def node_config_with_imports(
    version: str, default: str, d: Path, pause: str, restrict: bool, etc: Path | None = None
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
    for table, keys in cri_settings(version, d, pause, restrict).items():
        body.append(f"\n[{table}]\n" + "".join(f"  {k} = {v}\n" for k, v in keys.items()))
    return {etc / "config.toml": main, imported: "".join(body)}
