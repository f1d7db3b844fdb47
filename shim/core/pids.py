"""Telling a process apart from a later one with the same pid: its start time.

A pid is reused once its process is gone; the pair (pid, start time) is not. The create
server's pid file and the netrc directories of Nix calls (shim.core.auth) carry both, so
a live process is never taken for a dead one's successor. Standard library only, os only
(the fronts' liveness check reads the same field in sh).
"""

from __future__ import annotations


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (the process's start time), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None
