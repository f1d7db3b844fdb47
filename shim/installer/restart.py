"""Restart containerd (systemd unit or plain process) and reload systemd for the GC timer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from shim.core.errors import ConfigError
from shim.core.proc import run, run_captured
from shim.installer.detect import Node, _alive
from shim.installer.layout import DEFAULT_CONFIG, GC_TIMER, SERVICE_UNITS
from shim.installer.render import _systemd_dir


def _reload_systemd(systemd_dir: str | None, *, start: bool) -> str:
    if systemd_dir is not None or _systemd_dir(None) is None or not shutil.which("systemctl"):
        return f"GC timer: units written ({GC_TIMER}); systemd picks them up on daemon-reload"
    _systemctl("daemon-reload")
    if start:
        _systemctl("start", GC_TIMER)
    return f"GC timer: {GC_TIMER} started"


def _systemctl(*args: str) -> None:
    if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
        run_captured(["systemctl", *args])  # best effort: its exit status is not ours to judge


def restart_containerd(node: Node) -> dict[str, Any]:
    """Restart the service (systemd) or the plain containerd process reading node.config."""
    if shutil.which("systemctl"):
        for unit in SERVICE_UNITS[node.kind]:
            active = run_captured(["systemctl", "is-active", "--quiet", unit])
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
        # Not shim.core.proc: containerd must outlive this process and its group.
        new = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    finally:
        if not isinstance(log, int):  # not subprocess.DEVNULL
            log.close()
    return {"how": "process", "old_pid": pid, "pid": new.pid, "argv": argv}
