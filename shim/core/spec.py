"""Rewrite an OCI runtime spec (config.json) so its process runs inside a realized environment.

Pure apart from looking at the environment tree: takes the spec as a dict and
returns a new dict. What it adds:
- mounts: at /nix/store the environment's closure (shim.core.storeview; the node's whole
  store with store_view off), read-only, nosuid, nodev (the whole store read-write
  when the pod asks for nix-mutable AND the node policy allows it), the environment tree at
  /run/floxk/env (read-only), and a small tmpfs for FLOX_ENV_CACHE;
- env: Flox's FLOX_ENV* variables, PATH with the environment's bin first, the
  manifest's [vars] (a variable set in the pod spec wins: it is the deployer's
  explicit choice), and in dev mode the compiler/pkg-config search paths;
- args: unchanged (the pod's command stays PID 1) unless the environment has a
  hook or profile script; then a shell FROM the environment runs them and execs
  the command.
"""

from __future__ import annotations

import os

from shim.core import fastjson
from shim.core.errors import RealizeError

TYPE_CHECKING = False  # typing costs milliseconds on every container create
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    from shim.core.annotations import FloxAnnotations
    from shim.core.node import NodeConfig

ENV_MOUNT = "/run/floxk/env"
CACHE_MOUNT = "/run/floxk/cache"
STORE_MOUNT = "/nix/store"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLE = "etc/ssl/certs/ca-bundle.crt"
RESERVED_DESTINATIONS = (STORE_MOUNT, "/run/floxk")

# dev mode: what a build inside the container needs to find the environment's
# headers, libraries and build-system modules (Flox's dev activation sets the same).
_DEV_PATHS = {
    "CPATH": [f"{ENV_MOUNT}/include"],
    "LIBRARY_PATH": [f"{ENV_MOUNT}/lib"],
    "PKG_CONFIG_PATH": [f"{ENV_MOUNT}/lib/pkgconfig", f"{ENV_MOUNT}/share/pkgconfig"],
    "ACLOCAL_PATH": [f"{ENV_MOUNT}/share/aclocal"],
    "CMAKE_PREFIX_PATH": [ENV_MOUNT],
}


def activation_mode(activation: Mapping[str, Any], annotations: FloxAnnotations) -> str:
    """The pod's flox.dev/activate-mode, else the manifest's activate.mode, else "run"."""
    return annotations.activate_mode or activation.get("activate_mode") or "run"


def activation_env(
    env: list[str],
    activation: Mapping[str, Any],
    *,
    mode: str,
    description: str,
    project_dir: str = "/",
    env_tree: str | Path | None = None,
) -> list[str]:
    """Return `env` (OCI "K=V" list) with the environment's variables added.

    Used for the container's process on create and for exec'd processes.
    """
    current = _env_dict(env)
    out = dict(current)
    # Manifest vars: only where the pod spec did not set the name itself.
    for k, v in (activation.get("vars") or {}).items():
        out.setdefault(k, str(v))
    out["FLOX_ENV"] = ENV_MOUNT
    out["FLOX_ENV_DESCRIPTION"] = description
    out["FLOX_ENV_PROJECT"] = project_dir
    out["FLOX_ENV_CACHE"] = CACHE_MOUNT
    out["FLOX_PROMPT_ENVIRONMENTS"] = description
    out["FLOX_ACTIVATE_MODE"] = mode
    out["PATH"] = _prepend(
        [f"{ENV_MOUNT}/bin", f"{ENV_MOUNT}/sbin"], current.get("PATH", DEFAULT_PATH)
    )
    out["MANPATH"] = _prepend([f"{ENV_MOUNT}/share/man"], current.get("MANPATH", ""), keep=True)
    out["XDG_DATA_DIRS"] = _prepend(
        [f"{ENV_MOUNT}/share"], current.get("XDG_DATA_DIRS", "/usr/local/share:/usr/share")
    )
    if env_tree is not None and os.path.exists(os.path.join(env_tree, CA_BUNDLE)):
        for k in ("SSL_CERT_FILE", "NIX_SSL_CERT_FILE"):
            out.setdefault(k, f"{ENV_MOUNT}/{CA_BUNDLE}")
    if mode == "dev":
        for k, dirs in _DEV_PATHS.items():
            out[k] = _prepend(dirs, current.get(k, ""))
    return [f"{k}={v}" for k, v in out.items()]


def rewrite_spec(
    spec: Mapping[str, Any],
    env: Any,
    node: NodeConfig,
    annotations: FloxAnnotations,
) -> dict[str, Any]:
    """A new spec running the process inside `env` (a RealizedEnv: .path, .activation)."""
    # A deep copy: the spec is JSON data, and the C codec copies it faster than copy.deepcopy
    # (whose import alone costs more, on every container create).
    new = fastjson.loads(fastjson.dumps(dict(spec)))
    env_path = os.fspath(env.path)  # str or Path; os.path below, no pathlib import
    activation = env.activation
    mounts = list(new.get("mounts") or [])
    check_volumes(mounts)
    if annotations.nix_mutable and not node.policy.allow_nix_mutable:
        raise RealizeError(
            "flox.dev/nix-mutable=true is not allowed on this node",
            hint="drop the annotation, or set policy.allow_nix_mutable = true in the node's node.toml",
        )
    store_rw = annotations.nix_mutable and node.policy.allow_nix_mutable
    from shim.core.storeview import store_mounts

    mounts += store_mounts(node, env, writable=store_rw)
    mounts.append(bind_mount(str(env_path), ENV_MOUNT, readonly=True))
    mounts.append(
        {
            "destination": CACHE_MOUNT,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=65536k"],
        }
    )
    new["mounts"] = mounts

    process = dict(new.get("process") or {})
    mode = activation_mode(activation, annotations)
    ref = annotations.environment
    process["env"] = activation_env(
        list(process.get("env") or []),
        activation,
        mode=mode,
        description=ref.name if ref else "floxk",
        project_dir=process.get("cwd") or "/",
        env_tree=env_path,
    )
    process["args"] = wrap_args(list(process.get("args") or []), activation, env_path)
    new["process"] = process
    return new


def check_volumes(mounts: list) -> None:
    """RealizeError when one of the spec's mounts lands on /nix/store or under /run/floxk
    (checked before anything is realized for the container, and again when rewriting)."""
    for m in mounts:
        dest = mount_destination(m.get("destination", "") if isinstance(m, dict) else "")
        if any(dest == r or dest.startswith(r + "/") for r in RESERVED_DESTINATIONS):
            raise RealizeError(
                f"the container mounts a volume at {dest}, where floxk mounts the environment",
                hint=f"move that volume away from {STORE_MOUNT} and /run/floxk",
            )


def mount_destination(destination: object) -> str:
    """Where runc mounts `destination`: relative is taken from / and the path is cleaned
    (Go's filepath.Clean, which also collapses a leading `//`, unlike os.path.normpath).
    Symlinks inside the image are not resolved here: floxk's own mounts come last, so
    they cover whatever a volume put at the same place."""
    text = destination if isinstance(destination, str) else ""
    return os.path.normpath("/" + text.lstrip("/"))


def wrap_args(args: list[str], activation: Mapping[str, Any], env_path: str | Path) -> list[str]:
    """args unchanged without hook/profile; else sh from the env runs them, then execs args."""
    scripts = [s for s in (activation.get("hook"), activation.get("profile")) if s and s.strip()]
    if not scripts or not args:
        return args
    if not os.path.lexists(os.path.join(env_path, "bin", "sh")):
        raise RealizeError(
            "the environment has a hook or profile script but no shell (bin/sh) to run it",
            hint="add a shell to the environment's [install] (e.g. bash or busybox), "
            "or move the hook's work into the pod's command",
        )
    # Each script gets its own line so a missing trailing newline cannot join it to `exec`.
    script = "\n".join([*(s.rstrip("\n") for s in scripts), 'exec "$@"'])
    return [f"{ENV_MOUNT}/bin/sh", "-c", script, "sh", *args]


def bind_mount(source: str, destination: str, *, readonly: bool) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", "ro" if readonly else "rw", "nosuid", "nodev"],
    }


def _env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        k, sep, v = item.partition("=")
        if sep:
            out[k] = v
    return out


def _prepend(dirs: list[str], existing: str, *, keep: bool = False) -> str:
    """dirs first, then existing entries not already listed. keep: keep an empty trailing
    entry (MANPATH's "and the system default")."""
    rest = [p for p in existing.split(":") if p and p not in dirs]
    parts = dirs + rest
    return ":".join(parts) + (":" if keep and not rest else "")
