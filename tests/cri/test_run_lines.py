"""tests/cri/run_lines.py without containerd (these run in the default suite, not under -m cri)."""

from __future__ import annotations

import pytest

from tests.cri import harness, run_lines


def test_pinned_lines_come_from_the_install_script():
    assert run_lines.pinned_lines() == ["1.6.20", "1.7.24", "2.1.9"]


def test_summary_format():
    assert run_lines.summary("2.1.9", {"passed": 9, "failed": 0, "skipped": 0}) == (
        "containerd 2.1.9: 9 passed, 0 failed"
    )
    assert run_lines.summary("1.6.20", {"passed": 3, "failed": 1, "skipped": 2}) == (
        "containerd 1.6.20: 3 passed, 1 failed, 2 skipped"
    )


def test_counts_treat_errors_as_failures(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10">'
        "</testsuite></testsuites>"
    )
    assert run_lines.counts(report) == {"passed": 4, "failed": 3, "skipped": 3}


def test_missing_line_names_the_install_script(capsys):
    assert run_lines.main(["--line", "0.0.1"]) == 2
    assert "scripts/install-containerd.sh" in capsys.readouterr().err


def test_a_line_that_ran_no_test_fails(capsys):
    lines = harness.installed_lines()
    if not lines:
        pytest.skip("no containerd line installed (scripts/install-containerd.sh)")
    status = run_lines.main(["--line", lines[0].version, "-k", "no_test_has_this_name"])
    out = capsys.readouterr().out
    assert out == f"containerd {lines[0].version}: 0 passed, 0 failed\ncri: 0 passed, 0 failed\n"
    assert status == 1
