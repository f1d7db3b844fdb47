"""`floxk shim ...`: package the node side and put it on (or take it off) a node.

build and package run anywhere; install and uninstall run as root on the node itself (the
same code as the `floxk-node` zipapp, shim/installer/, shim/nodecli.py).
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from pathlib import Path

import typer
from rich.markup import escape

from floxk._exit import ExitStatus
from floxk.cli._output import OUTPUT, OutputFormat, err_console, print_json, print_plain

app = typer.Typer(
    help="Package the flox runtime for real nodes; install or remove it on a node.",
    no_args_is_help=True,
)
image_app = typer.Typer(
    help="The installer image (what the Helm chart and deploy run on each node).",
    no_args_is_help=True,
)
app.add_typer(image_app, name="image")


# Options several commands take, declared once (typer reads them as defaults).
KUBECONFIG = typer.Option(None, "--kubeconfig", help="Default: KUBECONFIG.")
CONTEXT = typer.Option(None, "--context", help="Default: the current context.")
LOAD_INTO_KIND = typer.Option(
    None, "--load-into-kind", help="kind cluster to `kind load` the image into."
)
ALL_NODES = typer.Option(
    False, "--all-nodes", help="Every node, not only those labelled flox.dev/install=true."
)
NODE_CONFIG = typer.Option(
    None, "--node-config", help="node.toml (hubs, keys) to write to every node."
)


class PackageFormat(StrEnum):
    deb = "deb"


@app.command()
def build(
    out: Path = typer.Option(Path("dist"), "--out", help="Directory for the zipapps."),
    output: OutputFormat = OUTPUT,
):
    """Build the zipapps containerd-shim-flox-v2, floxk-runc and floxk-node (reproducible)."""
    from floxk._shimbuild import build_zipapps

    result = build_zipapps(out)
    if output is OutputFormat.json:
        data = dataclasses.asdict(result)
        for a in data["artifacts"]:
            a["path"] = str(a["path"])
        print_json(data)
        return
    for a in result.artifacts:
        print_plain(f"{a.path}  {a.size} bytes  sha256 {a.sha256[:16]}")
    print_plain(f"version {result.version}, shim sources {result.source_digest[:16]}")


@app.command()
def package(
    format: PackageFormat = typer.Option(PackageFormat.deb, "--format", help="Package format."),
    out: Path = typer.Option(Path("dist"), "--out", help="Directory for the package."),
    output: OutputFormat = OUTPUT,
):
    """Build a node package: zipapps, the sh front and a default /etc/floxk/node.toml."""
    from floxk._shimbuild import build_deb

    result = build_deb(out)
    if output is OutputFormat.json:
        print_json({**dataclasses.asdict(result), "path": str(result.path)})
        return
    print_plain(f"{result.path}  sha256 {result.sha256[:16]}")
    for f in result.files:
        print_plain(f"  {f}")


def _render(result, output: OutputFormat, dry_run: bool) -> None:
    from shim.installer.files import summary

    if output is OutputFormat.json:
        print_json(result.to_dict())
        return
    if dry_run:
        diff = result.diff()
        if diff:
            print(diff, end="")
        else:
            err_console.print("no change", highlight=False)
        return
    text = summary(result)
    err_console.print(escape(text.rstrip("\n")), highlight=False, soft_wrap=True)


@app.command()
def install(
    config: Path | None = typer.Option(
        None, "--config", help="containerd config (default: k3s/RKE2 dir, else /etc/containerd)."
    ),
    containerd: str = typer.Option("containerd", "--containerd", help="containerd binary."),
    bin_dir: str = typer.Option(
        "/usr/lib/floxk", "--bin-dir", help="Where the zipapps are on this node."
    ),
    runc: str | None = typer.Option(None, "--runc", help="Real runc (default: the node's)."),
    python: str | None = typer.Option(None, "--python", help="python3 for the front's slow path."),
    restart: bool = typer.Option(False, "--restart/--no-restart", help="Restart containerd."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the diff, write nothing."),
    systemd_dir: str | None = typer.Option(
        None,
        "--systemd-dir",
        help="Where the GC timer's units go (default: /etc/systemd/system"
        " when systemd runs the node).",
    ),
    output: OutputFormat = OUTPUT,
):
    """Register the flox runtime with this node's containerd (root, on the node)."""
    from shim.installer.install import install as run_install

    result = run_install(
        config=config, containerd=containerd, bin_dir=bin_dir, runc=runc, python=python,
        restart=restart, dry_run=dry_run, systemd_dir=systemd_dir,
    )  # fmt: skip
    _render(result, output, dry_run)


@app.command()
def uninstall(
    config: Path | None = typer.Option(None, "--config", help="containerd config (as install)."),
    containerd: str = typer.Option("containerd", "--containerd", help="containerd binary."),
    bin_dir: str = typer.Option("/usr/lib/floxk", "--bin-dir", help="As given to install."),
    restart: bool = typer.Option(False, "--restart/--no-restart", help="Restart containerd."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the diff, write nothing."),
    force: bool = typer.Option(
        False, "--force", help="Even while flox containers run (they lose exec and stop)."
    ),
    output: OutputFormat = OUTPUT,
):
    """Remove what install added; restore the config's original bytes. Refuses while flox
    containers run on the node (it lists them) unless --force."""
    from shim.installer.uninstall import uninstall as run_uninstall

    result = run_uninstall(
        config=config, containerd=containerd, bin_dir=bin_dir, restart=restart, dry_run=dry_run,
        force=force,
    )  # fmt: skip
    _render(result, output, dry_run)


def _render_deploy(result, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        print_json(result.to_dict())
    else:
        for n in result.nodes:
            state = n.state or ("removed" if result.action == "undeploy" else "-")
            print_plain(f"{n.name}  {state}" + (f"  {n.message}" if n.message else ""))
        print_plain(f"image {result.image}" + (" (built)" if result.image_built else ""))
    if not result.ok:
        raise typer.Exit(ExitStatus.FAILURE)


@app.command()
def deploy(
    kubeconfig: Path | None = KUBECONFIG,
    context: str | None = CONTEXT,
    image: str | None = typer.Option(
        None, "--image", help="Tag for the installer image (push it where nodes can pull)."
    ),
    load_into_kind: str | None = LOAD_INTO_KIND,
    all_nodes: bool = ALL_NODES,
    node_config: Path | None = NODE_CONFIG,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for every node's state."),
    timeout: float = typer.Option(600, "--timeout", help="Seconds to wait."),
    output: OutputFormat = OUTPUT,
):
    """Install the flox runtime on a running cluster's nodes (installer DaemonSet)."""
    from floxk import _deploy
    from floxk._cluster import kube

    toml = _deploy.check_node_toml(node_config.read_text()) if node_config else None
    api = kube.api_client(context, config_file=kubeconfig, hint=_deploy.API_HINT)
    result = _deploy.deploy(
        api, image_tag=image, load_into_kind=load_into_kind, all_nodes=all_nodes,
        node_toml=toml, wait=wait, timeout=timeout, progress=_progress,
    )  # fmt: skip
    _render_deploy(result, output)


@app.command()
def undeploy(
    kubeconfig: Path | None = KUBECONFIG,
    context: str | None = CONTEXT,
    image: str | None = typer.Option(None, "--image", help="As given to deploy."),
    load_into_kind: str | None = LOAD_INTO_KIND,
    timeout: float = typer.Option(600, "--timeout", help="Seconds to wait."),
    output: OutputFormat = OUTPUT,
):
    """Remove the flox runtime from every node deploy touched; delete its cluster objects."""
    from floxk import _deploy
    from floxk._cluster import kube

    api = kube.api_client(context, config_file=kubeconfig, hint=_deploy.API_HINT)
    result = _deploy.undeploy(
        api, image_tag=image, load_into_kind=load_into_kind, timeout=timeout, progress=_progress
    )
    _render_deploy(result, output)


class ManifestFormat(StrEnum):
    yaml = "yaml"
    json = "json"


@app.command()
def manifests(
    image: str | None = typer.Option(
        None, "--image", help="Installer image REGISTRY/NAME:TAG (see `floxk shim image build`)."
    ),
    all_nodes: bool = ALL_NODES,
    node_config: Path | None = NODE_CONFIG,
    values: list[Path] = typer.Option(
        [], "--values", "-f", help="Helm values file for the chart (repeatable)."
    ),
    namespace: str = typer.Option("floxk-system", "--namespace", "-n"),
    uninstall: bool = typer.Option(
        False, "--uninstall", help="The objects that take the runtime off every node instead."
    ),
    output: ManifestFormat = typer.Option(ManifestFormat.yaml, "-o", "--output"),
):
    """Print the chart's objects as plain YAML for kubectl or GitOps (`helm template`)."""
    import yaml

    from floxk import _deploy

    toml = _deploy.check_node_toml(node_config.read_text()) if node_config else None
    objects = _deploy.manifests(
        image, all_nodes=all_nodes, node_toml=toml, value_files=values, namespace=namespace,
        uninstall=uninstall,
    )  # fmt: skip
    if output is ManifestFormat.json:
        print_json({"apiVersion": "v1", "kind": "List", "items": objects})
        return
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")


@image_app.command("build")
def image_build(
    push: str | None = typer.Option(
        None, "--push", help="Tag the image REGISTRY/NAME:TAG and push it there."
    ),
    debian: list[str] = typer.Option(
        [],
        "--debian",
        help="Debian release of the nodes, for python3/nix-bin (repeatable; "
        "default: this machine's). Nodes with python3 >= 3.11 and Nix need none.",
    ),  # fmt: skip
    output: OutputFormat = OUTPUT,
):
    """Build the installer image (as deploy does) and optionally push it to your registry."""
    from floxk import _deploy

    built = _deploy.build_installer_image(debian or [_deploy.host_codename()], progress=_progress)
    pushed = _deploy.push_image(built.tag, push, progress=_progress) if push else None
    if output is OutputFormat.json:
        print_json({
            "image": built.tag, "built": built.built, "debian": built.codenames,
            "pushed": pushed.ref if pushed else None, "digest": pushed.digest if pushed else None,
        })  # fmt: skip
        return
    print_plain(f"image {built.tag}" + (" (built)" if built.built else " (up to date)"))
    if pushed:
        print_plain(f"pushed {pushed.ref}" + (f"@{pushed.digest}" if pushed.digest else ""))


def _progress(msg: str) -> None:
    err_console.print(escape(msg), highlight=False, soft_wrap=True)
