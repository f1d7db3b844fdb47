"""Real-Nix fixtures: the test catalog, a signed binary cache with its hub, published envs.

Exposed to every test through tests/conftest.py. Session-scoped: the catalog is built and
the signing key generated once per test session. All of them skip when Nix is missing.

Fixtures (stable interface, used by tests/env, tests/shim and tests/cri):

  catalog_flake -> pathlib.Path
      A prepared copy of e2e/catalog (flake + static busybox). Its flake ref is
      f"path:{catalog_flake}"; packages: busybox, hello, greeting, web (see e2e/catalog).

  signed_cache -> SignedCache
      .root             Path of the cache directory (a file:// binary cache)
      .url              "file:///...": use as substituter
      .hub_url          the hub URL (same place: records live under <cache>/floxk/)
      .public_key       "floxk-test-1:BASE64": use as trusted public key
      .secret_key_file  Path of the matching secret key (for `floxk env push --signing-key`)

  publish_env(name, manifest_text) -> str
      Writes manifest.toml in a fresh directory, locks it against the catalog (which builds
      it), pushes it signed to signed_cache, and returns the ref "OWNER/NAME:GEN". `name`
      is "OWNER/NAME" or just "NAME" (owner "test"). Publishing the same name again makes a
      new generation.

Helpers (plain functions):

  publisher(catalog_ref, signed_cache, workdir) -> publish(name, manifest_text) -> str
      publish_env against another catalog (e.g. one built from a busybox of the test's own).

Plain helpers without pytest (key pairs, run_with_store) are in testkit/nix.py.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.catalog import prepare
from testkit.nix import make_key_pair


@dataclass(frozen=True)
class SignedCache:
    root: Path
    url: str
    hub_url: str
    public_key: str
    secret_key_file: Path


def _need_nix() -> None:
    if shutil.which("nix-store") is None:
        pytest.skip("needs Nix: run scripts/install-system.sh")


@pytest.fixture(scope="session")
def catalog_flake(tmp_path_factory) -> Path:
    _need_nix()
    directory = tmp_path_factory.mktemp("catalog")
    prepare(directory)
    return directory


@pytest.fixture(scope="session")
def signed_cache(tmp_path_factory) -> SignedCache:
    _need_nix()
    base = tmp_path_factory.mktemp("signed-cache")
    public, secret = make_key_pair(base / "keys", "floxk-test-1")
    root = base / "cache"
    root.mkdir()
    url = root.as_uri()
    return SignedCache(root=root, url=url, hub_url=url, public_key=public, secret_key_file=secret)


@pytest.fixture(scope="session")
def publish_env(catalog_flake, signed_cache, tmp_path_factory) -> Callable[[str, str], str]:
    return publisher(f"path:{catalog_flake}", signed_cache, tmp_path_factory.getbasetemp())


def publisher(catalog: str, cache: SignedCache, workdir: Path) -> Callable[[str, str], str]:
    """publish(name, manifest_text) -> ref, locking against `catalog` (a flake ref) and
    pushing signed to `cache`: what publish_env does, for a catalog of a test's own."""
    from floxk._lock import lock_environment
    from floxk._push import push_environment

    def publish(name: str, manifest_text: str) -> str:
        full = name if "/" in name else f"test/{name}"
        directory = Path(tempfile.mkdtemp(dir=workdir, prefix="env-"))
        (directory / "manifest.toml").write_text(manifest_text)
        lock_environment(directory, catalog=catalog)
        result = push_environment(
            directory,
            to=cache.url,
            name=full,
            signing_key=cache.secret_key_file,
        )
        return result.ref

    return publish
