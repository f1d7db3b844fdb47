"""What a running node says about its flox runtime (read through `docker exec`).

Used by `floxk status` and `floxk doctor`: the shim's version, whether containerd's live
config registers the flox runtime with BinaryName -> floxk-runc, and whether floxk-runc
answers (its front passes `--version` through to the real runc).
"""

from __future__ import annotations

import tomllib
from typing import Any

from floxk._cluster.nodeimage import RUNC_PATH, SHIM_PATH
from shim import containerd as ctrd


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

    def sh(*argv: str) -> tuple[int, str]:
        code, output = container.exec_run(list(argv))
        return code, output.decode(errors="replace")

    code, text = sh(SHIM_PATH, "--floxk-version")
    out["shim_version"] = text.strip() if code == 0 else None
    if code != 0:
        out["problems"].append(f"{SHIM_PATH} does not run: {text.strip()[-200:]}")
    code, text = sh("containerd", "config", "dump")
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
