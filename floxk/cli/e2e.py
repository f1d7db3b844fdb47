"""`floxk e2e`: does imageless Kubernetes work on this cluster? A table of cases says."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from floxk._cluster.constants import DEFAULT_E2E_CLUSTER_NAME
from floxk.cli._output import OUTPUT, OutputFormat, console, err_console, print_json

STYLE = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow"}
# pytest -v names a case, then (after any output of the fixtures it set up) its result.
_CASE = re.compile(r"::(?P<case>\w+)")
_RESULT = re.compile(r"\b(?P<result>PASSED|FAILED|ERROR|SKIPPED)\b")
_CLUSTER = "[cluster] "


def _progress(quiet: bool, verbose: bool) -> Callable[[str], None]:
    """Cluster steps and one line per finished case on stderr; -v: all of pytest's output."""
    current = {"case": ""}

    def say(line: str) -> None:
        if quiet:
            return
        if verbose:
            err_console.print(escape(line), highlight=False, soft_wrap=True)
            return
        if m := _CASE.search(line):
            current["case"] = m["case"]
        if _CLUSTER in line:
            step = line.split(_CLUSTER, 1)[1]
            err_console.print(f"[dim]•[/] {escape(step)}", highlight=False, soft_wrap=True)
        elif (m := _RESULT.search(line)) and current["case"]:
            result = m["result"].lower()
            err_console.print(
                f"[{STYLE.get(result, 'white')}]{result:>7}[/] {escape(current['case'])}",
                highlight=False,
            )
            current["case"] = ""

    return say


def e2e(
    ctx: typer.Context,
    provider: str = typer.Option(
        "kind",
        "--provider",
        help="kind or k3d: a fresh cluster (floxk up); existing: the current context.",
    ),
    name: str = typer.Option(DEFAULT_E2E_CLUSTER_NAME, "--name", help="Cluster name (kind/k3d)."),
    kubeconfig: Path | None = typer.Option(
        None,
        "--kubeconfig",
        help="With --provider existing (default: KUBECONFIG or ~/.kube/config).",
    ),
    keep: bool = typer.Option(
        False, "--keep", help="Leave the cluster (existing: the suite's namespace) behind."
    ),
    select: str | None = typer.Option(
        None, "-k", help="Only cases matching this pytest -k expression."
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Also write JUnit XML here."),
    workers: int = typer.Option(
        1, "--workers", min=0, help="Worker nodes besides the control plane (kind/k3d)."
    ),
    base_image: str | None = typer.Option(
        None, "--base-image", help="kind node image to build FROM (see floxk up)."
    ),
    timeout: int = typer.Option(600, "--timeout", help="Seconds for the cluster to come up."),
    output: OutputFormat = OUTPUT,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress on stderr."),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="All of pytest's output on stderr."
    ),
):
    """Verify a cluster end to end: environments built with Nix, pushed, run as pods."""
    from floxk._e2e import Suite, run_suite

    # The options from --provider to --timeout are the Suite's fields, read by name.
    result = run_suite(Suite.from_params(ctx.params), progress=_progress(quiet, verbose))
    if output is OutputFormat.json:
        print_json(result)
    else:
        _render(result)
    raise typer.Exit(result["exit_code"])


def _render(result: dict) -> None:
    table = Table(title=f"floxk e2e on {result['context']}")
    table.add_column("case")
    table.add_column("result", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    table.add_column("why", overflow="fold")
    for c in result["cases"]:
        style = STYLE.get(c["result"], "white")
        why = c.get("message", "") if c["result"] != "passed" else ""
        table.add_row(
            escape(c["title"]),
            f"[{style}]{c['result']}[/]",
            f"{c['seconds']:.1f}",
            escape(why[:400] + ("…" if len(why) > 400 else "")),
        )
    console.print(table)
    s, suite = result["summary"], result["suite"]
    counts = ", ".join(
        f"{s[r]} {r}" for r in ("passed", "failed", "error", "skipped", "not run") if s[r]
    )
    console.print(
        f"{counts} in {s['seconds']:.0f} s (cluster and environments "
        f"{suite.get('setup_seconds', 0):.0f} s, cleanup {suite.get('teardown_seconds', 0):.0f} s)",
        highlight=False,
    )
    if result["kept"]:
        console.print(
            f"kept: context {result['context']}, namespace {result['namespace']}", highlight=False
        )
    if result["junit"]:
        console.print(f"JUnit XML: {result['junit']}", highlight=False)
