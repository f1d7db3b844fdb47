"""Polling for a state another process reaches in its own time (tests and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], object], timeout: float = 60, interval: float = 0.2) -> bool:
    """Whether `check()` became true within `timeout` seconds, asked every `interval`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
