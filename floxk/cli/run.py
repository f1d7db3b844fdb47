"""`floxk run pod`: run a pod in an environment, follow it, exit with its exit code."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from floxk._exit import ExitStatus
from floxk.cli._output import (
    OUTPUT,
    OutputFormat,
    err_console,
    print_events,
    print_hint,
    print_json,
)

app = typer.Typer(help="Run workloads in environments.", no_args_is_help=True)


@app.command(
    "pod",
    epilog="Examples: floxk run pod -f pod.yaml --env alice/tools   |   "
    "floxk run pod hello --env alice/hello -- hello --greeting hi",
)
def pod(
    name: str | None = typer.Argument(None, help="Pod name (with -- CMD ARGS...)."),
    command: list[str] | None = typer.Argument(
        None, help="Command after --, run in the environment."
    ),
    file: Path | None = typer.Option(None, "-f", "--file", help="Pod manifest (YAML)."),
    env: str | None = typer.Option(
        None, "--env", help="Environment OWNER/NAME[:GEN] (annotation)."
    ),
    namespace: str | None = typer.Option(
        None, "-n", "--namespace", help="Default: the manifest's, else default."
    ),
    context: str | None = typer.Option(None, "--context", help="Default: the current context."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the pod until it is done."),
    logs: bool | None = typer.Option(
        None, "--logs/--no-logs", help="Stream logs (default with a CMD)."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Delete an existing pod of that name first."
    ),
    create_namespace: bool = typer.Option(
        True, "--create-namespace/--no-create-namespace", help="Create a missing namespace."
    ),
    timeout: int = typer.Option(300, "--timeout", help="Seconds to wait for the pod."),
    output: OutputFormat = OUTPUT,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No status on stderr."),
):
    """Fill in runtimeClassName, stub image and annotation, apply, follow, exit like the pod."""
    from floxk._cluster import kube
    from floxk._cluster import pod as pods

    if (file is None) == (not command):
        raise typer.BadParameter("give either -f MANIFEST or NAME --env REF -- CMD ARGS...")
    if file is not None:
        manifest = pods.fill_pod(pods.load_manifest(file), env_ref=env)
        if name:
            manifest["metadata"]["name"] = name
    else:
        if not name or not env or not command:
            raise typer.BadParameter("NAME and --env are needed with a command")
        manifest = pods.pod_from_command(name, env_ref=env, command=command)
    if namespace:
        manifest["metadata"]["namespace"] = namespace
    name, ns = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    api = kube.api_client(context or kube.current_context() or "")
    pods.apply_pod(api, manifest, replace=replace, create_namespace=create_namespace)
    if not quiet:
        err_console.print(f"pod {ns}/{name} applied", markup=False, highlight=False)
    if not wait:
        return
    stream_logs = logs if logs is not None else file is None

    def show(state) -> None:
        if not quiet:
            err_console.print(f"[dim]•[/] {escape(state.summary)}", highlight=False, soft_wrap=True)

    state = pods.follow(api, name, ns, timeout=timeout, until_started=stream_logs, on_change=show)
    if stream_logs and state.started:
        for line in pods.logs(api, name, ns):
            print(line, flush=True)
        state = pods.follow(api, name, ns, timeout=timeout, on_change=show)
    if output is OutputFormat.json:
        print_json(
            {
                "name": name,
                "namespace": ns,
                "phase": state.phase,
                "exit_code": state.exit_code,
                "containers": state.containers,
            }
        )
    if (state.failed and not state.started) or state.reason in (
        pods.FATAL_WAITING | pods.NEVER_STARTED
    ):
        _show_failure(api, name, ns, state)
        raise typer.Exit(ExitStatus.FAILURE)
    if state.run_to_completion:
        raise typer.Exit(state.exit_code or (ExitStatus.FAILURE if state.failed else ExitStatus.OK))


def _show_failure(api, name: str, ns: str, state) -> None:
    from floxk._cluster import pod as pods

    err_console.print(
        f"[bold red]error:[/] pod {escape(ns)}/{escape(name)} did not start: "
        f"{escape(state.reason or state.phase)}",
        highlight=False,
        soft_wrap=True,
    )
    if state.message:
        err_console.print(escape(state.message), highlight=False, soft_wrap=True)
    print_events("events", pods.events(api, name, ns))
    print_hint(
        "the runtime's message is above; check the environment ref exists "
        "(floxk env show REF) and the node (floxk doctor)"
    )
