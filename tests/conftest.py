"""Shared test setup: markers that skip with a reason where a real component is missing, and
a guard that fails the run if a test changed the host's containerd config directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.nixfixtures import catalog_flake, publish_env, signed_cache  # noqa: F401


def pytest_collection_modifyitems(config, items):
    no_nix = pytest.mark.skip(reason="needs Nix: run scripts/install-system.sh")
    no_root = pytest.mark.skip(reason="needs root (mounts, chroot stores, containerd)")
    have_nix = shutil.which("nix-store") is not None
    is_root = os.geteuid() == 0
    for item in items:
        if "nix" in item.keywords and not have_nix:
            item.add_marker(no_nix)
        if "root" in item.keywords and not is_root:
            item.add_marker(no_root)


# Host directories no test may change (tests build host-like state in their temp dirs:
# tests/install/nodeconf.py moves a config's imports there). containerd 2.2+ default configs
# import /etc/containerd/conf.d/*.toml, where `floxk shim install` puts its drop-in.
HOST_DIRS_UNTOUCHED = ("/etc/containerd",)


def host_snapshot(root: str) -> dict[str, bytes | str | None]:
    """path -> file bytes ("-> target" for a symlink, None for a directory) under root."""
    out: dict[str, bytes | str | None] = {}
    base = Path(root)
    if not base.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                out[str(p)] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[str(p)] = None
            else:
                try:
                    out[str(p)] = p.read_bytes()
                except OSError as e:
                    out[str(p)] = f"unreadable: {e.strerror}"
    return out


def host_changes(before: dict, after: dict) -> list[str]:
    gone = [f"removed {p}" for p in sorted(set(before) - set(after))]
    new = [f"created {p}{_origin(after[p])}" for p in sorted(set(after) - set(before))]
    changed = [
        f"changed {p}{_origin(after[p])}"
        for p in sorted(set(before) & set(after))
        if before[p] != after[p]
    ]
    return gone + new + changed


def _origin(content: bytes | str | None) -> str:
    """A written runtime table names the test's temp dir: show it, to tell which test (or
    which other test session on this machine) wrote the file."""
    if isinstance(content, bytes):
        for line in content.decode(errors="replace").splitlines():
            if line.strip().startswith("runtime_path"):
                return f" ({line.strip()})"
    return ""


@pytest.fixture(scope="session", autouse=True)
def host_config_untouched():
    """Fail the run (an error after the last test) if /etc/containerd changed under it."""
    before = {d: host_snapshot(d) for d in HOST_DIRS_UNTOUCHED}
    yield
    changes = [c for d in HOST_DIRS_UNTOUCHED for c in host_changes(before[d], host_snapshot(d))]
    if changes:
        pytest.fail(
            "tests changed the host's containerd configuration (tests must write only in"
            " their temp dirs; see tests/install/nodeconf.py):\n  " + "\n  ".join(changes),
            pytrace=False,
        )
