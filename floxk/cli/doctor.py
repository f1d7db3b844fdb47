"""`floxk doctor`: checks the tools and the current cluster, each failure with its fix."""

from __future__ import annotations

import typer
from rich.markup import escape

from floxk._exit import ExitStatus
from floxk.cli._output import OUTPUT, OutputFormat, console, print_json


def doctor(
    context: str | None = typer.Option(None, "--context", help="Default: the current context."),
    output: OutputFormat = OUTPUT,
):
    """Check docker, kind, kubectl, nix and the current cluster's flox runtime."""
    from floxk._cluster.doctor import cluster_checks, tool_checks

    checks = tool_checks() + cluster_checks(context)
    failed = [c for c in checks if not c["ok"] and c["required"]]
    if output is OutputFormat.json:
        print_json({"ok": not failed, "checks": checks})
    else:
        for c in checks:
            mark = (
                "[green]ok[/]  "
                if c["ok"]
                else ("[red]FAIL[/]" if c["required"] else "[yellow]warn[/]")
            )
            console.print(
                f"{mark} {escape(c['check'])}: {escape(c['detail'])}",
                highlight=False,
                soft_wrap=True,
            )
            if c["fix"]:
                console.print(
                    f"     [yellow]fix:[/] {escape(c['fix'])}", highlight=False, soft_wrap=True
                )
    if failed:
        missing_tool = any(c["check"] in ("kind", "kubectl", "nix-store", "docker") for c in failed)
        raise typer.Exit(ExitStatus.MISSING_DEPENDENCY if missing_tool else ExitStatus.FAILURE)
