"""What install/uninstall change (FileChange, Result), written atomically and undone as one."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shim.core.atomic import write_atomic
from shim.installer.layout import REAL_RUNC_LINK, RECORD_NAME


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
    write_atomic(p, content, mode, durable=True)


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
    record.setdefault("preexisting", [])  # block targets that were there before install
    return record


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
