"""What a running node says about its flox runtime (read through `docker exec`).

Used by `floxk status` and `floxk doctor`: the shim's version, whether containerd's live
config registers the flox runtime with BinaryName -> floxk-runc, and whether floxk-runc
answers (its front passes `--version` through to the real runc).
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from floxk._cluster.nodeimage import LIB_DIR, RUNC_PATH, SHIM_PATH
from shim.core import containerd as ctrd


def flox_runtime_in_dump(dump: str) -> dict[str, Any] | None:
    """The flox runtime table of a `containerd config dump`, under either plugin id."""
    try:
        config = tomllib.loads(dump)
    except tomllib.TOMLDecodeError:
        return None
    for plugin in ctrd.CRI_RUNTIME_PLUGIN.values():
        runtimes = config.get("plugins", {}).get(plugin, {}).get("containerd", {}).get("runtimes")
        if runtimes and ctrd.FLOX_RUNTIME in runtimes:
            return runtimes[ctrd.FLOX_RUNTIME]
    return None


def check_node(client, container_name: str) -> dict[str, Any]:
    """Runtime health of one node container: {"node", "shim_version", "flox_runtime",
    "binary_name", "runc_answers", "problems": [...]}."""
    out: dict[str, Any] = {"node": container_name, "problems": []}
    try:
        container = client.containers.get(container_name)
    except Exception as e:
        out["problems"].append(f"node container not found: {e}")
        return out

    def sh(*argv: str, stderr: bool = True) -> tuple[int, str]:
        code, output = container.exec_run(list(argv), stderr=stderr)
        return code, output.decode(errors="replace")

    code, text = sh(SHIM_PATH, "--floxk-version")
    out["shim_version"] = text.strip() if code == 0 else None
    if code != 0:
        out["problems"].append(f"{SHIM_PATH} does not run: {text.strip()[-200:]}")
    # stdout only: containerd >= 2.3 logs the migration of an older config version on
    # stderr, which is no TOML
    code, text = sh("containerd", "config", "dump", stderr=False)
    table = flox_runtime_in_dump(text) if code == 0 else None
    out["flox_runtime"] = table is not None
    out["binary_name"] = (table or {}).get("options", {}).get("BinaryName")
    if table is None:
        out["problems"].append("containerd's config has no flox runtime")
    elif out["binary_name"] != RUNC_PATH:
        out["problems"].append(
            f"flox runtime BinaryName is {out['binary_name']!r}, not {RUNC_PATH}"
        )
    code, text = sh(RUNC_PATH, "--version")
    out["runc_answers"] = code == 0
    if code != 0:
        out["problems"].append(f"{RUNC_PATH} --version failed: {text.strip()[-200:]}")
    return out


NODE_APP = f"{LIB_DIR}/floxk-node"


def node_stats(client, container_name: str) -> dict[str, Any]:
    """`floxk-node stats -o json` inside the node: environments, bytes, last GC, slowest
    realizations (see shim/core/stats.py); {"error": ...} when the node cannot say."""
    try:
        container = client.containers.get(container_name)
        code, output = container.exec_run(["python3", "-I", "-S", NODE_APP, "stats", "-o", "json"])
    except Exception as e:  # noqa: BLE001 - a node that cannot answer is a status
        return {"error": str(e).splitlines()[0]}
    text = output.decode(errors="replace")
    if code != 0:
        return {"error": (text.strip().splitlines() or ["no output"])[-1][-200:]}
    try:
        return json.loads(text)
    except ValueError:
        return {"error": f"floxk-node stats printed no JSON: {text.strip()[-200:]}"}
