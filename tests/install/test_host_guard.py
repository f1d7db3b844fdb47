"""The session guard in tests/conftest.py: a run whose tests change a watched host dir fails.

Checked on a stand-in for /etc/containerd (a temp dir), in a pytest run of its own, so this
test itself never touches the host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import host_changes, host_snapshot

ROOT = Path(__file__).resolve().parents[2]


def test_snapshot_sees_new_changed_and_removed_files(tmp_path):
    (tmp_path / "config.toml").write_text("version = 3\n")
    before = host_snapshot(str(tmp_path))
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "floxk.toml").write_text('[x]\n  runtime_path = "/tmp/t1/shim"\n')
    (tmp_path / "config.toml").write_text("version = 4\n")
    assert host_changes(before, host_snapshot(str(tmp_path))) == [
        f"created {tmp_path}/conf.d",
        f'created {tmp_path}/conf.d/floxk.toml (runtime_path = "/tmp/t1/shim")',
        f"changed {tmp_path}/config.toml",
    ]
    (tmp_path / "config.toml").unlink()
    assert f"removed {tmp_path}/config.toml" in host_changes(before, host_snapshot(str(tmp_path)))


def test_a_run_that_writes_a_watched_dir_fails(tmp_path):
    watched = tmp_path / "etc-containerd"
    watched.mkdir()
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(
        "import tests.conftest as guard\n"
        f"guard.HOST_DIRS_UNTOUCHED = ({str(watched)!r},)\n"
        "from tests.conftest import host_config_untouched  # noqa: F401\n"
    )
    (suite / "test_writes.py").write_text(
        "import os\n"
        "def test_writes_a_dropin():\n"
        f"    os.makedirs({str(watched / 'conf.d')!r})\n"
        f"    open({str(watched / 'conf.d' / 'floxk.toml')!r}, 'w').close()\n"
        "def test_harmless():\n"
        "    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", suite, suite],
        capture_output=True, text=True, cwd=suite,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 passed, 1 error" in proc.stdout
    assert "tests changed the host's containerd configuration" in proc.stdout
    assert f"created {watched}/conf.d/floxk.toml" in proc.stdout
