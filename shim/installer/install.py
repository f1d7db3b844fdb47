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
- `bin_dir/.floxk-install.json`, the record: the files install created, the block targets
  that were there before it (uninstall keeps those), and the options it was given
  (`install --as-before`, which the .deb's postinst runs on an upgrade, repeats them).

A second install with the same inputs writes nothing. After writing, the node's own
`containerd config dump` must show the runtime, or every file is put back as it was.
Uninstall strips the block and restores the original bytes (from the backup when the file
is otherwise unchanged). containerd is restarted only when asked.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from shim.core import containerd as ctrd
from shim.core.errors import ConfigError, FloxkError
from shim.core.node import load_node_config
from shim.core.proc import run
from shim.installer.detect import (
    Node,
    _block_owner,
    _default_python,
    _file_role,
    _target,
    default_runc_options,
    detect_node,
    find_real_runc,
    find_runc_v2_shim,
    runtimes,
)
from shim.installer.files import (
    FileChange,
    Result,
    _apply,
    _read_link,
    _read_record,
    _read_text,
    _undo,
)
from shim.installer.layout import (
    BACKUP_SUFFIX,
    DEFAULT_BIN_DIR,
    DEFAULT_CONFIG,
    FRONT_NAME,
    K3S_BASE,
    NO_RUNTIME_HINT,
    REAL_RUNC_LINK,
    RECORD_NAME,
    RUNC_NAME,
    RUNC_V2_SHIM,
    SHIM_FRONT_NAME,
    SHIM_NAME,
)
from shim.installer.render import (
    gc_timer_changes,
    render_block,
    render_node_front,
    render_node_shim_front,
    strip_block,
    with_block,
)
from shim.installer.restart import _reload_systemd, restart_containerd


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
    gc_timer: bool = True,
) -> Result:
    """Register the flox runtime with this node's containerd (see the module docstring).

    systemd_dir: where the GC timer's units go (default: /etc/systemd/system when systemd
    runs the node, else none). gc_timer=False: none (the deployer's DaemonSet runs the GC)."""
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
    python_arg, python = python, python or _default_python()
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
            front_path,
            "front",
            _read_text(Path(front_path)),
            render_node_front(bin_dir, python, load_node_config().state_dir),
        ),  # fmt: skip
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
                render_node_shim_front(bin_dir, python, runc_v2, load_node_config().state_dir),
            )  # fmt: skip
        )
    changes.append(FileChange(str(target), _file_role(mode), before, after))
    own_config = config is None or os.path.realpath(config) == DEFAULT_CONFIG
    units = gc_timer_changes(bin_dir, python, systemd_dir, default=own_config) if gc_timer else []
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
    if (
        before is not None
        and not strip_block(before)[1]
        and str(target) not in record["preexisting"]
    ):
        record["preexisting"].append(str(target))  # the operator's: uninstall keeps the file
    new_dir = str(target.parent)
    if mode == "dropin" and not target.parent.exists() and new_dir not in record["created_dirs"]:
        record["created_dirs"].append(new_dir)
    # How this install was asked for: what `install --as-before` (the package's postinst on
    # an upgrade) repeats. Options as given (None: found again on the node).
    record["options"] = {
        "config": os.path.abspath(config) if config is not None else None,
        "containerd": containerd, "python": python_arg, "runc": runc,
        "systemd_dir": systemd_dir, "gc_timer": gc_timer,
    }  # fmt: skip
    record_before = _read_text(Path(bin_dir, RECORD_NAME))
    record_text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if result.changed:
        changes.append(FileChange(f"{bin_dir}/{RECORD_NAME}", "record", record_before, record_text))
    applied = _apply(changes)
    if not result.changed and record_text != record_before:
        # Only the recorded options moved: bookkeeping, not a change to the node.
        _apply([FileChange(f"{bin_dir}/{RECORD_NAME}", "record", record_before, record_text)])
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
    elif any(c.changed and c.path == str(target) for c in changes):
        result.notes.append("containerd was not restarted: it reads the change when it restarts")
    return result


def install_as_before(
    *, bin_dir: str = DEFAULT_BIN_DIR, restart: bool = False, dry_run: bool = False
) -> Result:
    """install() again with the options the last install of bin_dir recorded: after new
    zipapps landed (a package upgrade), the fronts are rendered by the new version for the
    node as it was set up. Nothing else changes when nothing else did."""
    bin_dir = os.path.abspath(bin_dir)
    options = _read_record(bin_dir).get("options")
    if options is None:
        raise ConfigError(
            f"no install of {bin_dir} recorded its options",
            hint="run `floxk-node install` with the options you installed with once more",
        )
    return install(bin_dir=bin_dir, restart=restart, dry_run=dry_run, **options)


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
