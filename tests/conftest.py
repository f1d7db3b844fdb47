"""Shared test setup: markers that skip with a reason where a real component is missing."""

from __future__ import annotations

import os
import shutil

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
