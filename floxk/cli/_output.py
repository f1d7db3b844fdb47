"""Rendering: progress and diagnostics on stderr, data on stdout."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))
