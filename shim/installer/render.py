"""What install writes: the sh fronts for a bin_dir, the runtime block, the GC timer's units."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shim.core import containerd as ctrd
from shim.core.errors import ConfigError, FloxkError
from shim.core.node import load_node_config
from shim.front import python_argv, render_front, render_shim_front
from shim.installer.files import FileChange, _read_text
from shim.installer.layout import (
    BEGIN,
    END,
    GC_SERVICE,
    GC_TIMER,
    NODE_NAME,
    REAL_RUNC_LINK,
    RUNC_NAME,
    SHIM_NAME,
    SYSTEMD_DIR,
)


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
