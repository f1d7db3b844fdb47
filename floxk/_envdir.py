"""Environment directories: where manifest.toml and manifest.lock live, and `env init`."""

from __future__ import annotations

from pathlib import Path

from shim.core.errors import ManifestError

MANIFEST = "manifest.toml"
LOCK = "manifest.lock"

# Same shape as the manifest `flox init` writes, so the file moves between floxk and Flox.
# Kept free of keys floxk does not honour: a fresh environment must parse without warnings.
MANIFEST_TEMPLATE = """\
#
# A Flox environment manifest, read by floxk and by Flox alike.
# Keys floxk honours, warns about and rejects: docs/environments.md.
#
version = 1

# Packages to install, each under an id of your choosing.
#   pkg-path:   a package of the catalog flake (default: nixpkgs), optionally with
#               version, outputs, priority (lower wins on file conflicts), pkg-group
#   flake:      any flake installable
#   store-path: a path already in a Nix store
[install]
# hello.pkg-path = "hello"
# nodejs = { pkg-path = "nodejs_20", version = "^20.1" }
# tool.flake = "github:owner/repo#tool"

# Environment variables, set as they are (no expansion, no references to each other).
[vars]
# GREETING = "Howdy"

# A bash script run when the environment is activated, before the container's command.
[hook]
# on-activate = '''
#   mkdir -p "$HOME/.cache"
# '''

# Scripts sourced by the shell: `common` by every shell, then the one for bash/zsh/fish.
[profile]
# common = '''
#   echo "it's gettin' flox in here"
# '''

# Options: the systems this environment is locked for, and the activation mode
# ("run": the command runs in the environment; "dev": development tools as well).
[options]
systems = ["aarch64-linux", "x86_64-linux"]
# activate.mode = "run"
"""


def manifest_path(directory: Path) -> Path:
    """DIR/manifest.toml, or Flox's own DIR/.flox/env/manifest.toml when only that exists."""
    plain = directory / MANIFEST
    flox = directory / ".flox" / "env" / MANIFEST
    return flox if not plain.exists() and flox.exists() else plain


def lock_path(directory: Path) -> Path:
    """The lock beside the manifest (it may not exist yet)."""
    return manifest_path(directory).with_name(LOCK)


def init_env(directory: Path) -> Path:
    """Write DIR/manifest.toml from the template; never overwrite one. Returns its path."""
    path = directory / MANIFEST
    if directory.exists() and not directory.is_dir():
        raise ManifestError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as f:  # "x": fails if the file appeared meanwhile
            f.write(MANIFEST_TEMPLATE)
    except FileExistsError:
        raise ManifestError(
            f"{path} already exists; not overwriting it",
            hint="edit it, or run `floxk env init` on another directory",
        ) from None
    return path
