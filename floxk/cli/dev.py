"""`floxk dev DIR -f MANIFESTS`: the edit-and-see loop. Parses, starts a floxk._dev.Session,
renders its events: logs on stdout (prefixed per pod, like stern), progress, errors and a
live status line on stderr."""

from __future__ import annotations

import threading
from pathlib import Path

import typer
from rich.markup import escape
from rich.text import Text

from floxk.cli._output import (
    OutputFormat,
    console,
    err_console,
    print_hint,
    progress_printer,
    warn,
)

EXAMPLES = (
    "Examples: floxk dev ./web -f k8s/   |   "
    "floxk dev ./web -f app.yaml --name alice/web --context kind-floxk"
)
_COLORS = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta"]


class _JsonLines:
    """-o json: every event as one JSON object per line on stdout (`event` names its type)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _say(self, text: str) -> None:
        self({"event": "Step", "text": text})

    def __call__(self, event) -> None:
        import dataclasses
        import json
        import sys

        data = event
        if dataclasses.is_dataclass(event) and not isinstance(event, type):
            data = {"event": type(event).__name__, **dataclasses.asdict(event)}
        with self.lock:
            sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
            sys.stdout.flush()


class _Renderer:
    """Turns session events into output; called from several threads."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._say = progress_printer(quiet)
        self.lock = threading.Lock()
        self.generation: int | None = None
        self.rollout = "waiting for the first build"
        self.last_error: str | None = None
        self.colors: dict[str, str] = {}
        self.live = None
        self._seen_line = ""
        if not quiet and err_console.is_terminal:
            from rich.live import Live

            self.live = Live(
                self._line(), console=err_console, refresh_per_second=4, transient=True
            )

    def __enter__(self):
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()

    def _line(self) -> Text:
        line = Text()
        line.append(f"gen {self.generation if self.generation is not None else '-'}", "bold")
        line.append(" │ ")
        line.append(self.rollout)
        if self.last_error:
            line.append(" │ last error: ", "red")
            line.append(self.last_error)
        return line

    def _status(self) -> None:
        if self.live is not None:
            self.live.update(self._line())
        elif not self.quiet:
            text = self._line().plain
            if text != self._seen_line:
                self._seen_line = text
                err_console.print(f"[dim]status:[/] {escape(text)}", highlight=False)

    def __call__(self, event) -> None:
        from floxk import _dev

        with self.lock:
            if isinstance(event, _dev.LogLine):
                color = self.colors.setdefault(event.pod, _COLORS[len(self.colors) % len(_COLORS)])
                prefix = Text(f"{event.pod} {event.container} │ ", style=color)
                # Under the live line on a terminal, printed through its console (above the
                # line, rich does not proxy one Console's output into another's Live);
                # otherwise, on stdout.
                out = err_console if self.live is not None and console.is_terminal else console
                out.print(prefix + Text(event.text), highlight=False, soft_wrap=True)
            elif isinstance(event, _dev.Step):
                self._say(event.text)
            elif isinstance(event, _dev.Built):
                if event.pushed:
                    self._say(f"published {event.ref} ({event.paths} paths, {event.seconds:.1f} s)")
                else:
                    self._say(f"lock unchanged: {event.ref} is current ({event.seconds:.1f} s)")
                for w in event.warnings:
                    warn(w)
                self.generation = event.generation
                self.last_error = None
                self._status()
            elif isinstance(event, _dev.Problem):
                self.last_error = event.message.splitlines()[0]
                err_console.print(
                    f"[bold red]error[/] ({event.source}): {escape(event.message)}",
                    highlight=False,
                    soft_wrap=True,
                )
                for d in event.details:
                    err_console.print(f"  {escape(d)}", highlight=False, soft_wrap=True)
                if event.hint:
                    print_hint(event.hint)
                self._status()
            elif isinstance(event, _dev.Rollout):
                parts = [f"{s.identity} {s.ready} {s.phase}" for s in event.statuses]
                self.rollout = "; ".join(parts) or "no workloads"
                if event.done and not event.failed:
                    self._say(
                        f"generation {event.generation} ready in {event.seconds:.1f} s: "
                        + ", ".join(f"{s.identity} {s.ready}" for s in event.statuses)
                    )
                    self.last_error = None
                self._status()


def dev(
    directory: Path = typer.Argument(
        ..., help="Environment directory (holds manifest.toml).", exists=True, file_okay=False
    ),
    files: list[str] = typer.Option(
        ..., "-f", "--filename", help="Manifest FILE or DIR (its *.yaml/*.yml/*.json)."
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="OWNER/NAME to publish DIR as (default: the one environment the manifests name).",
    ),
    context: str | None = typer.Option(None, "--context", help="Default: the current context."),
    catalog: str | None = typer.Option(
        None,
        "--catalog",
        help="Flake for pkg-path packages (default: the one DIR was locked with).",
    ),
    namespace: str | None = typer.Option(
        None, "-n", "--namespace", help="For objects naming none (default: the context's)."
    ),
    timeout: int = typer.Option(300, "--timeout", help="Seconds a rollout may take."),
    logs: bool = typer.Option(True, "--logs/--no-logs", help="Stream the pods' logs."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only logs and errors."),
    output: OutputFormat = typer.Option(
        OutputFormat.text, "-o", "--output", help="json: every event as a JSON line on stdout."
    ),
):
    """Publish DIR on the cluster's dev hub, apply the manifests, then on every save of
    DIR/manifest.toml or a manifest: lock, push a new generation, roll the workloads that
    use it onto it. Logs and a status line until Ctrl-C, which leaves the cluster as it is."""
    from floxk._dev import Session

    render_to = _JsonLines() if output is OutputFormat.json else _Renderer(quiet)
    with render_to as render:
        session = Session(
            directory,
            files,
            emit=render,
            name=name,
            context=context,
            catalog=catalog,
            namespace=namespace,
            timeout=timeout,
            logs=logs,
        )
        render._say(
            f"floxk dev: {session.name} from {directory} on {session.context}; "
            "watching manifest.toml and the manifests (Ctrl-C stops)"
        )
        try:
            session.start()
            session.watch()
        except KeyboardInterrupt:
            session.close()
    err_console.print(
        "stopped watching; the cluster is left as it is "
        f"(`floxk delete -f {' -f '.join(files)}` removes the workloads)",
        highlight=False,
        soft_wrap=True,
    )
