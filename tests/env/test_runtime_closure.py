"""The test catalog's realistic runtime (testkit/closures.py + e2e/catalog): the host's
python3 as store paths, two applications sharing it, realized and run from a chroot store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.catalog import prepare
from floxk._lock import lock_environment
from floxk._push import push_environment
from shim.core import hub
from shim.core.model import current_system
from shim.core.realize import realize
from testkit.closures import cached_python_runtime
from testkit.nix import run_with_store

pytestmark = [pytest.mark.nix, pytest.mark.root]


def _files_and_bytes(paths: list[str], store: Path) -> tuple[int, int]:
    files = size = 0
    for p in paths:
        for dirpath, _, names in os.walk(store / p.lstrip("/")):
            for n in names:
                st = os.lstat(os.path.join(dirpath, n))
                files += 1
                size += st.st_size
    return files, size


def test_two_apps_share_a_real_sized_python_runtime(tmp_path, signed_cache):
    catalog = prepare(tmp_path / "catalog", runtime=cached_python_runtime())
    realized = {}
    for app in ("pyapp0", "pyapp1"):
        d = tmp_path / app
        d.mkdir()
        (d / "manifest.toml").write_text(
            f'version = 1\n[install]\npython3.pkg-path = "python3"\n{app}.pkg-path = "{app}"\n'
        )
        lock_environment(d, catalog=catalog)
        pushed = push_environment(
            d, to=signed_cache.url, name=f"test/{app}", signing_key=signed_cache.secret_key_file
        )
        realized[app] = realize(
            hub.peek(pushed.ref, [signed_cache.url]).lock,
            system=current_system(),
            substituters=[signed_cache.url],
            trusted_keys=[signed_cache.public_key],
            store_root=tmp_path / "store",
            state_dir=tmp_path / "state",
        )
    a, b = (set(realized[x].activation["closure"]) for x in ("pyapp0", "pyapp1"))
    shared = a & b
    assert len(a) >= 15 and len(a - b) == 1 and len(b - a) == 1, (a, b)
    files, size = _files_and_bytes(sorted(shared), tmp_path / "store")
    assert files > 2000 and size > 30 * 2**20, (files, size)  # the size and shape of a runtime
    assert any("-python3-" in p for p in shared) and any("-rt-glibc-" in p for p in shared)
    for app, env in realized.items():
        out = run_with_store(tmp_path / "store", [str(env.path / "bin" / app)])
        assert out.returncode == 0 and f"{app} revision 1 on python 3." in out.stdout, out
    check = "import ssl, sqlite3, ctypes, lzma, zlib; print(ssl.OPENSSL_VERSION.split()[0])"
    out = run_with_store(
        tmp_path / "store", [str(realized["pyapp0"].path / "bin" / "python3"), "-c", check]
    )
    assert out.returncode == 0 and out.stdout.strip() == "OpenSSL", out
