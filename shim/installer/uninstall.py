"""Take the flox runtime off a node's containerd again (see shim.installer)."""

from __future__ import annotations

import os
from pathlib import Path

from shim.core.errors import FloxkError, InUseError
from shim.installer.detect import _block_owner, _file_role, detect_node, live_flox_tasks
from shim.installer.files import FileChange, Result, _apply, _read_link, _read_record, _read_text
from shim.installer.layout import (
    BACKUP_SUFFIX,
    DEFAULT_BIN_DIR,
    GC_TIMER,
    REAL_RUNC_LINK,
    RECORD_NAME,
)
from shim.installer.render import strip_block
from shim.installer.restart import _systemctl, restart_containerd


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
    record = _read_record(bin_dir)
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
        elif original is None and stripped == "" and str(target) not in record["preexisting"]:
            after = None  # install created the file
        elif original is not None:
            result.notes.append(f"{target} changed since install: kept those edits, left {backup}")
        result.changes.append(FileChange(str(target), _file_role(mode), before, after))
        if original is not None and after == original:
            result.changes.append(FileChange(str(backup), "backup", original, None))
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
    _stop_create_server(result)
    if restart and owner is not None:
        result.restarted = restart_containerd(node)
    return result


def _stop_create_server(result: Result) -> None:
    """The create server runs the zipapps' code; with the runtime gone it must not stay."""
    from shim import server
    from shim.core.node import load_node_config

    try:
        state_dir = load_node_config().state_dir
    except FloxkError as e:  # uninstall still goes on; the server leaves when its code does
        result.notes.append(f"create server not stopped: {e.message}")
        return
    if server.stop(state_dir):
        result.notes.append(f"stopped the create server of {state_dir}")
