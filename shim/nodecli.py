"""floxk-node: the node side of `floxk shim`, without floxk (the admin zipapp)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shim.core.errors import FloxkError
from shim.core.node import load_node_config
from shim.installer.files import summary
from shim.installer.install import install, install_as_before
from shim.installer.layout import DEFAULT_BIN_DIR
from shim.installer.uninstall import uninstall


def main(argv: list[str] | None = None) -> None:
    """floxk-node install|uninstall|realize|gc: the node side of `floxk shim`, without floxk."""
    ap = argparse.ArgumentParser(prog="floxk-node", description="floxk on a node (run as root).")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("install", "uninstall"):
        p = sub.add_parser(name, help=f"{name} the flox runtime in containerd's configuration")
        p.add_argument(
            "--config",
            help="containerd config (default: k3s/RKE2 dir, else /etc/containerd/config.toml)",
        )
        p.add_argument("--containerd", default="containerd", help="containerd binary")
        p.add_argument("--bin-dir", default=DEFAULT_BIN_DIR, help="where the zipapps are")
        p.add_argument("--restart", action="store_true", help="restart containerd afterwards")
        p.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "install":
            p.add_argument("--runc", help="the real runc (default: the node's runc runtime)")
            p.add_argument("--python", help="python3 for the front's slow path")
            p.add_argument("--systemd-dir", help="where the GC timer's units go (default:"
                           " /etc/systemd/system when systemd runs the node)")  # fmt: skip
            p.add_argument("--no-gc-timer", action="store_true",
                           help="no GC timer (the deployer's DaemonSet runs the periodic GC)")  # fmt: skip
            p.add_argument("--as-before", action="store_true",
                           help="with the options the last install recorded (what the"
                           " package runs after an upgrade); other options are ignored")  # fmt: skip
        else:
            p.add_argument("--force", action="store_true",
                           help="even while flox containers run (they lose exec and stop)")  # fmt: skip
    p = sub.add_parser("realize", help="realize OWNER/NAME[:GEN] with node.toml's hubs and keys")
    p.add_argument("ref")
    p = sub.add_parser("gc", help="free environments and store paths no container uses")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument(
        "--auto",
        action="store_true",
        help="only at disk pressure (node.toml [gc]): least recently used first, down to the"
        " low mark (what the systemd timer runs)",
    )
    p = sub.add_parser("stats", help="what this node realized, created and collected")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument("--prometheus", metavar="FILE", help="also write node-exporter's textfile")
    a = ap.parse_args(argv)
    try:
        data = _run_command(a)
    except FloxkError as e:
        sys.stderr.write(f"error: {e.message}\n" + (f"hint: {e.hint}\n" if e.hint else ""))
        sys.exit(e.exit_code)
    print(json.dumps(data, indent=2, sort_keys=True) if isinstance(data, dict) else data)


def _run_command(a: argparse.Namespace) -> Any:
    if a.command in ("install", "uninstall"):
        kwargs = {"config": a.config, "containerd": a.containerd, "bin_dir": a.bin_dir,
                  "restart": a.restart, "dry_run": a.dry_run}  # fmt: skip
        if a.command == "install" and a.as_before:
            result = install_as_before(bin_dir=a.bin_dir, restart=a.restart, dry_run=a.dry_run)
        elif a.command == "install":
            result = install(**kwargs, runc=a.runc, python=a.python, systemd_dir=a.systemd_dir,
                             gc_timer=not a.no_gc_timer)  # fmt: skip
        else:
            result = uninstall(**kwargs, force=a.force)
        if a.json:
            return result.to_dict()
        return (result.diff() if a.dry_run else summary(result)).rstrip("\n")
    node = load_node_config()
    if a.command == "stats":
        from shim.core import stats

        data = stats.summary(node)
        if a.prometheus:
            stats.write_prometheus(a.prometheus, data)
        return data if a.output == "json" else stats.render(data)
    if a.command == "gc":
        from shim.core import gc, pressure

        if a.auto:
            return pressure.collect_at_pressure(node, reason="timer")
        collected = gc.collect(
            state_dir=node.state_dir, store_root=node.store_root, dry_run=a.dry_run
        )
        if not a.dry_run:
            pressure.record_gc(node, {"reason": "manual", **collected})
        return collected
    from shim.core import hub
    from shim.core.annotations import EnvRef
    from shim.core.service import realize_for  # the node's one gate: owner policy, signed record

    return str(realize_for(EnvRef(*hub.parse_ref(a.ref)), node).path)
