"""Nix helpers without pytest: signing key pairs, a program run against a chroot store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def make_key_pair(directory: Path, name: str) -> tuple[str, Path]:
    """A fresh Nix signing key pair: (public key text, secret key file)."""
    directory.mkdir(parents=True, exist_ok=True)
    secret, public = directory / f"{name}.secret", directory / f"{name}.public"
    subprocess.run(
        ["nix-store", "--generate-binary-cache-key", name, secret, public],
        check=True,
        capture_output=True,
    )
    return public.read_text().strip(), secret


def run_with_store(
    store_root: Path, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run argv seeing store_root/nix/store at /nix/store (private mount namespace; root)."""
    script = 'mount --bind "$1" /nix/store && shift && exec "$@"'
    store = Path(store_root) / "nix" / "store"
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", store, *argv],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=60,
    )
