"""`floxk up`, `floxk down`, `floxk status`: dev clusters with the flox runtime inside."""

from __future__ import annotations

from pathlib import Path

import typer

from floxk._cluster.constants import DEFAULT_CLUSTER_NAME, DEFAULT_K8S_VERSION
from floxk.cli._output import (
    OUTPUT,
    OutputFormat,
    console,
    err_console,
    print_json,
    print_plain,
    progress_printer,
)

QUIET = typer.Option(False, "-q", "--quiet", help="No progress on stderr.")
VERBOSE = typer.Option(False, "-v", "--verbose", help="More detail in the result.")


def up(
    provider: str = typer.Option("kind", "--provider", help="kind (k3d: see docs/clusters.md)."),
    name: str | None = typer.Option(
        None, "--name", help="Cluster name (context kind-NAME; default: the config's, else floxk)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Your kind Cluster config (nodes, port mappings, mounts, networking); floxk "
        "adds its node image, label, mounts and containerd patch to every node.",
    ),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Worker nodes besides the control plane."
    ),
    k8s_version: str = typer.Option(
        DEFAULT_K8S_VERSION,
        "--k8s-version",
        help="Kubernetes version: the kind node image kindest/node:VERSION (local, else "
        "pulled, else floxk's offline build; docs/kind-offline.md lists the lines).",
    ),
    base_image: str | None = typer.Option(
        None,
        "--base-image",
        help="kind node image to build FROM (pulled when not local). Default: see --base-source.",
    ),
    base_source: str | None = typer.Option(
        None,
        "--base-source",
        help="Where the default base comes from: auto (a local kindest/node or offline build, "
        "else a pull, else the offline build), upstream (local or pulled, never built), "
        "offline (floxk's own build, never pulled). Env FLOXK_BASE_SOURCE.",
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait until a flox pod can be scheduled."
    ),
    timeout: int = typer.Option(300, "--timeout", help="Seconds to wait."),
    recreate: bool = typer.Option(False, "--recreate", help="Delete and recreate the cluster."),
    registry: bool = typer.Option(
        False,
        "--registry",
        help="Also run a local image registry on localhost:5001 that the nodes pull from"
        " (docs/clusters.md), for image pods beside flox pods.",
    ),
    output: OutputFormat = OUTPUT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
):
    """Create (or reuse) a kind cluster whose nodes run pods in Nix environments."""
    from floxk._cluster.up import up as do_up

    result = do_up(
        provider=provider,
        name=name,
        workers=workers,
        k8s_version=k8s_version,
        base_image=base_image,
        base_source=base_source,
        wait=wait,
        timeout=timeout,
        recreate=recreate,
        config=config,
        registry=registry,
        progress=progress_printer(quiet),
    )
    if output is OutputFormat.json:
        print_json(result)
        return
    state = "created" if result["created"] else "up to date"
    lines = [f"{result['context']} {state}"]
    if verbose or result["created"]:
        lines += [
            f"  node image  {result['node_image']} (shim {result['shim']})",
            f"  kind base   {result['base']['image']} ({result['base']['source']})",
            f"  dev hub     {result['hub']}  (floxk env push DIR --name OWNER/NAME)",
            "  next        floxk run pod NAME --env OWNER/NAME -- CMD",
        ]
    if result.get("registry"):
        lines.append(
            f"  registry    {result['registry']['push']}  (docker push {result['registry']['push']}/NAME:TAG)"
        )
    for line in lines:
        print_plain(line)


def down(
    provider: str = typer.Option("kind", "--provider"),
    name: str = typer.Option(DEFAULT_CLUSTER_NAME, "--name"),
    output: OutputFormat = OUTPUT,
    quiet: bool = QUIET,
):
    """Delete the cluster (exit 0 when there is none); its dev hub stays on disk."""
    from floxk._cluster.up import down as do_down

    result = do_down(provider=provider, name=name)
    if output is OutputFormat.json:
        print_json(result)
    elif not quiet:
        what = "deleted" if result["deleted"] else "nothing to delete for"
        err_console.print(f"{what} {provider}-{name}", markup=False, highlight=False)


def status(
    name: str | None = typer.Option(None, "--name", help="Only this cluster."),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Also what each node did: environments, GC, realizations."
    ),
    output: OutputFormat = OUTPUT,
):
    """Clusters, nodes, the shim version per node and the runtime's health."""
    from rich.table import Table

    from floxk._cluster.up import status as do_status

    clusters = do_status(name=name, verbose=verbose)
    if output is OutputFormat.json:
        print_json(clusters)
        return
    if not clusters:
        err_console.print("no kind or k3d clusters (floxk up creates one)", highlight=False)
        return
    for c in clusters:
        title = f"{c['context']}" + (
            f"  spec {c['spec_digest'][:12]}"
            if c.get("spec_digest")
            else "  (not made by floxk up)"
        )
        if "error" in c:
            title += f"  error: {c['error']}"
        table = Table(title=title)
        table.add_column("node", no_wrap=True)
        for column in ("ready", "flox label", "shim", "runtime"):
            table.add_column(column)
        for n in c["nodes"]:
            health = "ok" if not n.get("problems") else "; ".join(n["problems"])
            shim = (n.get("shim_version") or "-").removeprefix("containerd-shim-flox-v2 ")
            table.add_row(
                n.get("name") or n["node"],
                str(n.get("ready", "?")),
                str(n.get("flox_label", "?")),
                shim,
                health,
            )
        console.print(table)
        for n in c["nodes"] if verbose else []:
            _say_node_stats(n.get("name") or n["node"], n.get("stats") or {})


def _say_node_stats(node: str, stats: dict) -> None:
    """floxk-node stats' human form (shim.core.stats.render), indented under the node's name."""
    from shim.core.stats import render

    if "error" in stats:
        text = f"stats unavailable: {stats['error']}"
    else:
        try:
            text = render(stats)
        except (KeyError, TypeError, ValueError) as e:  # an older node's stats
            text = f"stats unreadable ({type(e).__name__}: {e})"
    console.print(f"{node}:", markup=False, highlight=False)
    for line in text.splitlines():
        print_plain(f"  {line}")
