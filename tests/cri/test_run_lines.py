"""tests/cri/run_lines.py and testkit/lines.py without containerd (default suite, not -m cri)."""

from __future__ import annotations

import pytest

from testkit import lines
from tests.cri import run_lines


def test_pinned_lines_come_from_both_install_scripts():
    assert lines.debian_pins() == ["1.6.20", "1.7.24", "2.1.9"]
    assert lines.go_pins() == {
        "containerd": ["2.2.9", "2.3.7", "2.4.2"],
        "runc": ["1.4.4", "1.5.3"],
    }
    assert lines.pinned_lines() == ["1.6.20", "1.7.24", "2.1.9", "2.2.9", "2.3.7", "2.4.2"]


def test_matrix_pairs_every_line_with_debian_runc_and_the_newest_with_new_runcs():
    debian = lines.debian_runc()
    if debian is None:
        pytest.skip(f"no Debian runc at {lines.DEBIAN_RUNC} (scripts/install-system.sh)")
    d = debian.version
    assert lines.matrix() == [
        ("1.6.20", d),
        ("1.7.24", d),
        ("2.1.9", d),
        ("2.2.9", d),
        ("2.3.7", d),
        ("2.3.7", "1.4.4"),
        ("2.3.7", "1.5.3"),
        ("2.4.2", d),
        ("2.4.2", "1.4.4"),
        ("2.4.2", "1.5.3"),
    ]


def test_summary_format():
    assert run_lines.summary("2.3.7", "1.4.4", {"passed": 26, "failed": 0, "skipped": 0}) == (
        "containerd 2.3.7 runc 1.4.4: 26 passed, 0 failed"
    )
    assert run_lines.summary("1.6.20", "1.1.5", {"passed": 3, "failed": 1, "skipped": 2}) == (
        "containerd 1.6.20 runc 1.1.5: 3 passed, 1 failed, 2 skipped"
    )


def test_counts_treat_errors_as_failures(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10">'
        "</testsuite></testsuites>"
    )
    assert run_lines.counts(report) == {"passed": 4, "failed": 3, "skipped": 3}


def test_missing_line_names_the_install_scripts(capsys):
    assert run_lines.main(["--line", "0.0.1"]) == 2
    err = capsys.readouterr().err
    assert "containerd 0.0.1 not installed" in err
    assert "scripts/install-go-lines.sh" in err


def test_runc_under_test_refuses_an_unknown_version(monkeypatch):
    monkeypatch.setenv(lines.RUNC_ENV, "0.0.1")
    with pytest.raises(LookupError, match="FLOXK_CRI_RUNC=0.0.1 is not installed"):
        lines.runc_under_test()


def test_each_installed_runc_reports_its_directory_version():
    runcs = [r for r in lines.installed_runcs() if str(r.path) != lines.DEBIAN_RUNC]
    if not runcs:
        pytest.skip("no runc built (scripts/install-go-lines.sh)")
    for r in runcs:
        assert r.path.parent.name == r.version
        assert lines._runc_version(str(r.path)) == r.version


def test_a_pair_that_ran_no_test_fails(capsys):
    installed = lines.installed_lines()
    debian = lines.debian_runc()
    if not installed or debian is None:
        pytest.skip("no containerd line or Debian runc installed")
    line = installed[0].version
    status = run_lines.main(["--line", line, "--runc", debian.version, "-k", "no_test_has_this"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"containerd {line} runc {debian.version}: 0 passed, 0 failed"
    assert out[1].startswith("cri: 0 passed, 0 failed (1 pairs, ")
    assert status == 1
