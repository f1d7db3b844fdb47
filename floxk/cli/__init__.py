"""The floxk command line: parse, call a core function, render. No logic lives here."""

from __future__ import annotations

import sys

import typer

from floxk._exit import ExitStatus
from floxk.cli import apply as apply_cli
from floxk.cli import cluster as cluster_cli
from floxk.cli import dev as dev_cli
from floxk.cli import doctor as doctor_cli
from floxk.cli import e2e as e2e_cli
from floxk.cli import env as env_cli
from floxk.cli import run as run_cli
from floxk.cli import shim as shim_cli
from floxk.cli._output import print_error
from shim import __version__
from shim.core.errors import FloxkError

app = typer.Typer(
    name="floxk",
    help="Imageless Kubernetes for developers: pods run in Nix environments, not images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(env_cli.app, name="env")
app.command("up")(cluster_cli.up)
app.command("down")(cluster_cli.down)
app.command("status")(cluster_cli.status)
app.add_typer(run_cli.app, name="run")
app.command("apply", epilog=apply_cli.APPLY_EXAMPLES)(apply_cli.apply)
app.command("delete", epilog=apply_cli.DELETE_EXAMPLES)(apply_cli.delete)
app.command("dev", epilog=dev_cli.EXAMPLES)(dev_cli.dev)
app.command("doctor")(doctor_cli.doctor)
app.command("e2e")(e2e_cli.e2e)
app.add_typer(shim_cli.app, name="shim")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"floxk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """floxk: environments instead of images."""


def _report(e: FloxkError) -> None:
    print_error(e.message, e.hint)


def _quiet_libraries() -> None:
    """Library log records (the kubernetes client's exec credential plugin failing) in
    floxk's own words on stderr; urllib3's retry chatter only when it gives up."""
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    # A kubeconfig with insecure-skip-tls-verify chose that; once per request is noise.
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")


def main(argv: list[str] | None = None) -> None:
    _quiet_libraries()
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of exiting.
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except FloxkError as e:
        _report(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(ExitStatus.INTERRUPTED)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, EOFError):
        sys.exit(ExitStatus.INTERRUPTED)
    except Exception as e:  # click usage errors and the like
        # Duck-typed: typer >= 0.16 raises its vendored click's exceptions, not click's.
        show, code = getattr(e, "show", None), getattr(e, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            # 2 is click's own code for a usage error.
            sys.exit(ExitStatus.USAGE if code == 2 else ExitStatus.FAILURE)
        # A Kubernetes client failure no core turned into a FloxkError: still no traceback.
        from floxk._cluster import kube

        err = kube.translate(e, "talking to the Kubernetes API")
        if err is None:
            raise
        _report(err)
        sys.exit(err.exit_code)
    sys.exit(ExitStatus.OK)
