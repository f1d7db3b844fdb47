"""`floxk e2e` without a cluster: the report plugin on a real pytest run, the exit-code rules,
the command line, and the paths that end before any cluster exists (k3d refused with
`floxk up`'s reason, -k matching nothing, bad options). The suite itself runs against a
real kind cluster in `task e2e` (docs/e2e.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from e2e import kit
from floxk import _e2e
from shim.core.errors import FloxkError, NotFoundError

SAMPLE = '''
import pytest

@pytest.fixture(scope="session")
def shared():
    return 1

def test_good(shared):
    """Works fine."""

def test_bad(shared):
    """Breaks on purpose."""
    assert shared == 2, "the runtime said no"

def test_skipped():
    pytest.skip("needs node access")

@pytest.fixture
def broken():
    raise RuntimeError("setup went wrong")

def test_error(broken):
    pass
'''


def floxk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "floxk", *args], capture_output=True, text=True, timeout=120
    )


def test_report_plugin_classifies_cases(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts =\n")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini")]
        + ["-p", "e2e.plugin", "-p", "no:cacheprovider", "--floxk-report", str(report)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout
    data = json.loads(report.read_text())
    cases = {c["case"]: c for c in data["cases"]}
    assert {k: c["result"] for k, c in cases.items()} == {
        "test_good": "passed",
        "test_bad": "failed",
        "test_skipped": "skipped",
        "test_error": "error",
    }
    assert cases["test_good"]["title"] == "Works fine"
    assert "the runtime said no" in cases["test_bad"]["message"]
    assert cases["test_skipped"]["message"] == "needs node access"
    assert "setup went wrong" in cases["test_error"]["message"]
    assert data["session_error"] is None and data["pytest_exit"] == 1
    result = _e2e.summarize(data, proc.returncode)
    assert result["exit_code"] == 1
    assert result["summary"]["passed"] == 1 and result["summary"]["failed"] == 1


def _data(*results: str, **extra) -> dict:
    cases = [
        {"case": f"c{i}", "title": "t", "result": r, "seconds": 1.0} for i, r in enumerate(results)
    ]
    return {"cases": cases, "suite": {"setup_seconds": 2.0, "teardown_seconds": 1.0}, **extra}


def test_exit_code_is_failures_capped_at_one():
    assert _e2e.summarize(_data("passed", "skipped"), 0)["exit_code"] == 0
    assert _e2e.summarize(_data("passed", "failed", "failed", "error"), 1)["exit_code"] == 1
    assert _e2e.summarize(_data("passed", "not run"), 1)["exit_code"] == 1
    assert _e2e.summarize(_data("passed"), 2)["exit_code"] == 2  # pytest interrupted
    assert _e2e.summarize(_data("passed", "passed"), 0)["summary"]["seconds"] == 5.0


def test_session_error_and_no_cases_raise():
    data = _data("not run", session_error={"message": "no cluster", "hint": "floxk up"})
    with pytest.raises(FloxkError) as err:
        _e2e.summarize(data, 3)
    assert (err.value.message, err.value.hint) == ("no cluster", "floxk up")
    with pytest.raises(NotFoundError, match="no case matches -k 'zzz'"):
        _e2e.summarize(_data(), 5, select="zzz")


def test_pytest_argv_carries_every_option(tmp_path):
    argv = _e2e.Suite(
        provider="existing",
        name="n",
        kubeconfig=tmp_path / "kc",
        keep=True,
        select="exec",
        junit=tmp_path / "j.xml",
        workers=2,
    ).pytest_argv(report=tmp_path / "r.json", ini=tmp_path / "pytest.ini")
    assert argv[:4] == [sys.executable, "-m", "pytest", str(_e2e.CASES_DIR)]
    joined = " ".join(argv)
    for part in (
        f"-c {tmp_path / 'pytest.ini'}",
        "-p e2e.plugin",
        "--floxk-provider existing",
        f"--floxk-kubeconfig {tmp_path / 'kc'}",
        "--floxk-keep",
        "-k exec",
        f"--junitxml {tmp_path / 'j.xml'}",
        "--floxk-workers 2",
    ):
        assert part in joined


def test_every_suite_field_is_an_e2e_option():
    import dataclasses

    import typer

    from floxk.cli import app

    command = typer.main.get_command(app).commands["e2e"]  # type: ignore[attr-defined]
    options = {p.name for p in command.params}
    assert {f.name for f in dataclasses.fields(_e2e.Suite)} <= options
    suite = _e2e.Suite.from_params({"provider": "existing", "workers": 3, "output": "json"})
    assert (suite.provider, suite.workers, suite.timeout) == ("existing", 3, 600)


def test_suite_ships_in_the_package():
    cases = sorted(p.name for p in _e2e.CASES_DIR.glob("test_*.py"))
    assert cases == [
        "test_1_pods.py",
        "test_2_workloads.py",
        "test_3_node_gc.py",
        "test_4_images.py",
        "test_5_ci_runners.py",
    ]
    assert (_e2e.E2E_DIR / "catalog" / "flake.nix").is_file()


def test_k3d_is_refused_with_floxk_ups_reason():
    r = floxk("e2e", "--provider", "k3d", "-q")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "k3d clusters are not created by this floxk yet" in r.stderr
    assert "hint:" in r.stderr


def test_no_matching_case_and_bad_options(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: x\n")
    r = floxk("e2e", "--provider", "existing", "--kubeconfig", str(kubeconfig), "-k", "zzz", "-q")
    assert r.returncode == 3 and "no case matches -k 'zzz'" in r.stderr, r.stderr
    r = floxk("e2e", "--provider", "minikube", "-q")
    assert r.returncode == 1 and "unknown provider" in r.stderr
    r = floxk("e2e", "--provider", "existing", "--kubeconfig", str(tmp_path / "nope"), "-q")
    assert r.returncode == 3 and "does not exist" in r.stderr


def test_kit_parsers():
    assert kit.env_of("A=1\nPATH=/x:/y\nnoise\n=bad\n") == {"A": "1", "PATH": "/x:/y"}
    mounts = "overlay / overlay rw 0 0\n/dev/x /nix/store ext4 ro,nosuid 0 0\n"
    assert kit.mounts_at(mounts, "/nix/store") == ["ro,nosuid"]
    assert kit.mounts_at(mounts, "/run/floxk/env") == []


def test_cases_have_titles():
    """Every case's docstring is its row in the table."""
    for path in _e2e.CASES_DIR.glob("test_*.py"):
        text = Path(path).read_text()
        for block in text.split("\ndef test_")[1:]:
            assert block.split("\n", 1)[1].lstrip().startswith('"""'), block.split("(")[0]
