"""Rendering: progress and diagnostics on stderr, data on stdout."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


# -o/--output of every command whose result is data (typer reads it as the default).
OUTPUT = typer.Option(OutputFormat.text, "-o", "--output")


def print_plain(text: str) -> None:
    """A line of data on stdout as it is: no markup, no highlighting, no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """A warning on stderr (the text is escaped: never read as markup)."""
    err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """A core function's progress callback: one bullet line a step on stderr (-q: none)."""

    def say(msg: str) -> None:
        if not quiet:
            err_console.print(f"[dim]•[/] {escape(msg)}", highlight=False, soft_wrap=True)

    return say


def print_error(message: str, hint: str | None = None) -> None:
    """An error and its hint on stderr, as floxk shows every FloxkError."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        print_hint(hint)


def print_hint(hint: str) -> None:
    err_console.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)


def print_events(title: str, events: list[dict[str, Any]]) -> None:
    """A pod's events (type, reason, message) under a bold title, on stderr; none: nothing."""
    if events:
        err_console.print(f"[bold]{escape(title)}:[/]", highlight=False)
    for e in events:
        err_console.print(
            f"  {escape(e['type'] or '')} {escape(e['reason'] or '')}: {escape(e['message'])}",
            highlight=False,
            soft_wrap=True,
        )


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))
