"""`floxk apply -f` / `floxk delete -f`: any workload, filled in for the flox runtime."""

from __future__ import annotations

import typer
from rich.markup import escape

from floxk._exit import ExitStatus
from floxk.cli._output import (
    OUTPUT,
    OutputFormat,
    console,
    err_console,
    print_error,
    print_events,
    print_hint,
    print_json,
    progress_printer,
)

FILES = typer.Option(
    ..., "-f", "--filename", help="Manifest FILE, DIR (its *.yaml/*.yml/*.json) or - (stdin)."
)
NAMESPACE = typer.Option(
    None, "-n", "--namespace", help="For objects naming none (default: the context's)."
)
CONTEXT = typer.Option(None, "--context", help="Default: the current context.")
APPLY_EXAMPLES = (
    "Examples: floxk apply -f app.yaml --env alice/tools   |   "
    "floxk apply -f k8s/ -n team --timeout 600   |   cat app.yaml | floxk apply -f - -o json"
)
DELETE_EXAMPLES = "Examples: floxk delete -f app.yaml   |   floxk delete -f k8s/ -n team"


def _status_table(statuses):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("workload", "ready", "status"):
        table.add_column(column, no_wrap=column != "status")
    for s in statuses:
        style = "red" if s.failed else "green" if s.done else ""
        table.add_row(
            escape(s.identity), s.ready, f"[{style}]{escape(s.phase)}[/]" if style else s.phase
        )
    return table


def apply(
    files: list[str] = FILES,
    env: str | None = typer.Option(
        None, "--env", help="Environment OWNER/NAME[:GEN] for pod templates that name none."
    ),
    namespace: str | None = NAMESPACE,
    context: str | None = CONTEXT,
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Follow every workload to its outcome."
    ),
    timeout: int = typer.Option(300, "--timeout", help="Seconds to wait for the outcomes."),
    create_namespace: bool = typer.Option(
        True, "--create-namespace/--no-create-namespace", help="Create missing namespaces."
    ),
    force_conflicts: bool = typer.Option(
        False, "--force-conflicts", help="Take over fields another field manager owns."
    ),
    output: OutputFormat = OUTPUT,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress on stderr."),
):
    """Apply manifests (server-side, dependency order, dry-run first), pod-bearing objects
    filled in for the flox runtime; follow every workload until available or complete.

    Exit 0: every workload reached its outcome; 1: one failed (its pod's events show the
    runtime's message); 5: timeout."""
    from floxk._cluster import apply as applying
    from floxk._cluster import kube
    from floxk._cluster import pod as pods

    docs = pods.read_documents(files)
    ctx = context or kube.current_context() or ""
    api = kube.api_client(ctx)
    client = kube.dynamic(api)
    plan = applying.plan(
        api,
        docs,
        env_ref=env,
        namespace=namespace,
        default_namespace=kube.context_namespace(ctx),
        client=client,
    )
    applying.check(api, plan, create_namespaces=create_namespace, force=force_conflicts)
    applied = applying.apply(
        api,
        plan,
        create_namespaces=create_namespace,
        force=force_conflicts,
        client=client,
    )
    if output is OutputFormat.text:
        for a in applied:
            console.print(f"{a.identity} {a.action}", markup=False, highlight=False)
    workloads = [(a.kind, a.namespace, a.name) for a in applied if a.kind in applying.WORKLOADS]
    result = {
        "applied": [
            {
                "kind": a.kind,
                "name": a.name,
                "namespace": a.namespace,
                "action": a.action,
                "flox": a.flox,
            }
            for a in applied
        ],
        "workloads": [],
    }
    code = ExitStatus.OK
    if wait and workloads:
        statuses, code = _follow(api, workloads, timeout=timeout, quiet=quiet)
        result["workloads"] = [s.as_dict() for s in statuses]
    if output is OutputFormat.json:
        print_json(result)
    if code:
        raise typer.Exit(code)


def _follow(api, workloads, *, timeout: int, quiet: bool):
    """Follow with a live table on a terminal (one line per change elsewhere); render
    each failure with its pod's events. Returns (statuses, exit code)."""
    from rich.live import Live

    from floxk._cluster import apply as applying

    live = None
    if not quiet and err_console.is_terminal:
        live = Live(console=err_console, refresh_per_second=4, transient=False)
        live.start()
    seen: dict[str, str] = {}

    def on_change(statuses) -> None:
        if live is not None:
            live.update(_status_table(statuses))
            return
        for s in statuses:
            line = f"{s.ready:>7}  {s.phase}"
            if not quiet and s.phase != "not seen yet" and seen.get(s.identity) != line:
                seen[s.identity] = line
                err_console.print(
                    f"[dim]•[/] {escape(s.identity)}  {escape(line.strip())}",
                    highlight=False,
                    soft_wrap=True,
                )

    code = ExitStatus.OK
    try:
        statuses = applying.follow(api, workloads, timeout=timeout, on_change=on_change)
    except applying.FollowTimeout as e:
        statuses, code = e.statuses, ExitStatus.TIMEOUT
        if live is not None:
            live.stop()
            live = None
        print_error(e.message, e.hint)
    finally:
        if live is not None:
            live.stop()
    failed = [s for s in statuses if s.failed]
    for s in failed:
        _show_failure(api, s)
    if failed:
        code = ExitStatus.FAILURE
    return statuses, code


def _show_failure(api, s) -> None:
    from floxk._cluster import apply as applying

    err_console.print(
        f"[bold red]error:[/] {escape(s.identity)} failed: {escape(s.reason or s.phase)}"
        + (f" (pod {escape(s.pod)})" if s.pod else ""),
        highlight=False,
        soft_wrap=True,
    )
    if s.message:
        err_console.print(escape(s.message.strip()), highlight=False, soft_wrap=True)
    evs = applying.failing_pod_events(api, s)
    print_events(f"events of pod {s.pod}", evs)
    runtime = any("floxk:" in e["message"] for e in evs) or "floxk:" in (s.message or "")
    hint = (
        "the runtime's `floxk:` message above says what is wrong with the environment: check "
        "the ref exists (floxk env show REF) and the node (floxk doctor)"
        if runtime
        else f"kubectl describe {s.kind.lower()} -n {s.namespace} {s.name}; "
        + (f"kubectl logs -n {s.namespace} {s.pod}" if s.pod else "kubectl get events")
    )
    print_hint(hint)


def delete(
    files: list[str] = FILES,
    namespace: str | None = NAMESPACE,
    context: str | None = CONTEXT,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Until every object is gone."),
    timeout: int = typer.Option(300, "--timeout", help="Seconds to wait."),
    grace_period: int | None = typer.Option(
        None, "--grace-period", min=0, help="Seconds pods get to stop (default: theirs)."
    ),
    output: OutputFormat = OUTPUT,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress on stderr."),
):
    """Delete what `floxk apply -f` applied from the same files (dependents first; objects
    already gone are fine). Namespaces apply created on its own are kept."""
    from floxk._cluster import apply as applying
    from floxk._cluster import kube
    from floxk._cluster import pod as pods

    docs = pods.read_documents(files)
    ctx = context or kube.current_context() or ""
    api = kube.api_client(ctx)
    deleted = applying.delete(
        api,
        docs,
        namespace=namespace,
        default_namespace=kube.context_namespace(ctx),
        wait=wait,
        timeout=timeout,
        grace_period=grace_period,
        progress=progress_printer(quiet),
    )
    if output is OutputFormat.json:
        print_json(
            [
                {"kind": d.kind, "name": d.name, "namespace": d.namespace, "result": d.result}
                for d in deleted
            ]
        )
    else:
        for d in deleted:
            console.print(f"{d.identity} {d.result}", markup=False, highlight=False)
