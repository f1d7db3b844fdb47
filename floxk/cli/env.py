"""`floxk env ...`: define, lock, show, publish and realize environments.

Each command parses, calls one core function, renders. Core functions live in
floxk/_*.py (laptop side) or shim/ (node side) and never print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from floxk.cli._output import OUTPUT, OutputFormat, console, print_json, print_plain, warn

app = typer.Typer(
    help="Define, lock, show, publish and realize environments.", no_args_is_help=True
)

# --- laptop side: init, lock, show -------------------------------------------------


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="Directory to create the environment in."),
):
    """Create DIR/manifest.toml with a commented starting point."""
    from floxk._envdir import init_env

    path = init_env(directory)
    print_plain(f"created {path}; add packages under [install], then `floxk env lock`")


@app.command()
def lock(
    directory: Path = typer.Argument(
        Path("."), help="Environment directory (holds manifest.toml)."
    ),
    catalog: str | None = typer.Option(
        None, "--catalog", help="Flake providing pkg-path packages."
    ),
    system: list[str] = typer.Option([], "--system", help="Lock for this system (repeatable)."),
    output: OutputFormat = OUTPUT,
):
    """Resolve manifest.toml with Nix and write manifest.lock (Flox lockfile v1)."""
    from floxk._lock import lock_environment

    result = lock_environment(directory, catalog=catalog, systems=system or None)

    for warning in result.warnings:
        warn(warning)
    data: dict[str, Any] = {
        "path": str(result.path),
        "digest": result.lock.digest(),
        "systems": result.systems,
        "packages": len(result.lock.packages),
        "built": result.built,
        "warnings": result.warnings,
    }
    if output is OutputFormat.json:
        print_json(data)
        return
    print_plain(
        f"wrote {data['path']}: {data['packages']} package entries for "
        f"{', '.join(result.systems)} (digest {data['digest'][:16]})"
    )


@app.command()
def show(
    target: str = typer.Argument(..., help="Environment directory or hub ref OWNER/NAME[:GEN]."),
    hub: str | None = typer.Option(None, "--hub", help="Hub URL for refs."),
    output: OutputFormat = OUTPUT,
):
    """Show packages per system with store paths, vars and hooks."""
    from rich.markup import escape
    from rich.table import Table

    from floxk._show import describe

    data = describe(target, hub=hub)
    for warning in data["warnings"]:
        warn(warning)
    if output is OutputFormat.json:
        print_json(data)
        return
    state = (
        f"locked, lockfile v{data['lockfile_version']}, digest {data['digest'][:16]}"
        if data["locked"]
        else "not locked"
    )
    console.print(f"[bold]{escape(data['source'])}[/] ({state})", highlight=False)
    if not data["locked"] and not data["install"]:
        console.print("no packages declared")
    elif not data["locked"]:
        table = Table("package", "kind", "from", "version", "systems", title="declared")
        for iid, d in data["install"].items():
            source = d["pkg_path"] or d["flake"] or d["store_path"]
            table.add_row(iid, d["kind"], source, d["version"] or "", ", ".join(d["systems"] or []))
        console.print(table)
    for system, packages in data["systems"].items():
        table = Table("package", "priority", "group", title=system)
        table.add_column("store paths", overflow="fold")
        for p in packages:
            paths = p["install_paths"] if p["install_paths"] is not None else p["outputs"].values()
            table.add_row(p["install_id"], str(p["priority"]), p["group"] or "", "\n".join(paths))
        console.print(table)
    if data["vars"]:
        table = Table("variable", "value", title="vars")
        for name, value in data["vars"].items():
            table.add_row(name, value)
        console.print(table)
    if data["activate_mode"]:
        console.print(f"activate mode: {data['activate_mode']}")
    for title, script in [("hook.on-activate", data["hook"])] + [
        (f"profile.{shell}", text) for shell, text in data["profile"].items()
    ]:
        if script:
            console.rule(title)
            console.print(script.strip("\n"), markup=False, highlight=False)


# --- publish and node side: push, realize, gc ----------------------------------------


@app.command()
def push(
    directory: Path = typer.Argument(Path("."), help="Locked environment directory."),
    to: str | None = typer.Option(
        None, "--to", help="Binary cache URL (file://...); default: the current cluster's dev hub."
    ),
    name: str = typer.Option(..., "--name", help="OWNER/NAME on the hub."),
    signing_key: Path | None = typer.Option(None, "--signing-key", help="Nix secret key file."),
    output: OutputFormat = OUTPUT,
):
    """Copy the closure to a binary cache and record a new generation on the hub."""
    import dataclasses

    from floxk._push import push_environment

    if to is None:  # a `floxk up` cluster: its dev hub, signed with its key
        from floxk._cluster.devhub import current_dev_hub

        dev = current_dev_hub()
        to, signing_key = dev.url, signing_key or dev.signing_key
    result = push_environment(directory, to=to, name=name, signing_key=signing_key)

    for warning in result.warnings:
        warn(warning)
    if output is OutputFormat.json:
        print_json(dataclasses.asdict(result))
        return
    print_plain(
        f"pushed {result.ref} ({len(result.paths)} paths, "
        f"{'signed' if result.signed else 'UNSIGNED'}) to {result.cache_url}"
    )


@app.command()
def realize(
    target: str = typer.Argument(..., help="Environment directory or hub ref OWNER/NAME[:GEN]."),
    hub: list[str] = typer.Option([], "--hub", help="Hub URL (repeatable; default: node.toml)."),
    substituter: list[str] = typer.Option(
        [], "--substituter", help="Binary cache URL (repeatable; default: node.toml)."
    ),
    trusted_key: list[str] = typer.Option(
        [], "--trusted-key", help="Trusted public key NAME:BASE64 (repeatable; default: node.toml)."
    ),
    store: Path | None = typer.Option(None, "--store", help="Store root (chroot store)."),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Where trees live (default: node.toml, else /var/lib/floxk)."
    ),
    system: str | None = typer.Option(None, "--system", help="Default: this machine's."),
    insecure_accept_unsigned: bool = typer.Option(
        False,
        "--insecure-accept-unsigned",
        help="Accept records and paths without signatures; only honoured when no trusted key "
        "is set.",
    ),
    output: OutputFormat = OUTPUT,
):
    """Realize an environment as a node would; print the environment tree's path.

    A hub ref goes through the node's one gate (shim.core.service): node.toml's owner
    policy, and a record signed by a trusted key, like a pod's."""
    from shim.core import hub as hubs
    from shim.core import realize as realizer
    from shim.core.annotations import EnvRef
    from shim.core.lockfile import load_lock
    from shim.core.model import current_system
    from shim.core.node import NodeConfig, load_node_config
    from shim.core.service import realize_for

    node = load_node_config()
    node = NodeConfig(
        hubs=hub or node.hubs,
        # A hub given on the command line is also where its closure lives (the hub sits
        # next to its binary cache), as node.toml's substituters default to its hubs.
        substituters=substituter or hub or node.substituters,
        trusted_public_keys=trusted_key or node.trusted_public_keys,
        state_dir=str(state_dir) if state_dir else node.state_dir,
        store_root=str(store) if store is not None else node.store_root,
        runc=node.runc,
        runc_v2_shim=node.runc_v2_shim,
        log_file=node.log_file,
        policy=node.policy,
        source=node.source,
    )
    system = system or current_system()
    if Path(target).is_dir():
        env = realizer.realize(
            load_lock(Path(target) / "manifest.lock"),
            system=system,
            substituters=node.substituters,
            trusted_keys=node.trusted_public_keys,
            store_root=node.store_root,
            state_dir=node.state_dir,
            insecure_accept_unsigned=insecure_accept_unsigned,
        )
    else:
        ref = EnvRef(*hubs.parse_ref(target))
        env = realize_for(
            ref, node, system=system, insecure_accept_unsigned=insecure_accept_unsigned
        )
    if output is OutputFormat.json:
        print_json({"digest": env.digest, "path": str(env.path), "activation": env.activation})
        return
    print(env.path)


@app.command()
def gc(
    store: Path | None = typer.Option(None, "--store"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Default: node.toml, else /var/lib/floxk."
    ),
    output: OutputFormat = OUTPUT,
):
    """Free realized environments and store paths no running container uses."""
    from shim.core import gc as collector
    from shim.core.node import load_node_config

    node = load_node_config()
    result = collector.collect(
        state_dir=state_dir or node.state_dir,
        store_root=store if store is not None else node.store_root,
        dry_run=dry_run,
    )
    if output is OutputFormat.json:
        print_json(result)
        return
    verb = "would free" if dry_run else "freed"
    console.print(
        f"{verb} {len(result['freed_envs'])} environment(s) and "
        f"{len(result['store_paths_deleted'])} store path(s) ({result['mib_freed']:.1f} MiB); "
        f"kept {len(result['kept_envs'])} in use",
        markup=False,
        highlight=False,
    )


_ = (console, print_json)
