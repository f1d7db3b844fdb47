"""Run the CRI suite once per containerd line: `python3 -m tests.cri.run_lines [--line X.Y.Z] [pytest args]`.

`task test:cri` calls this. Each line runs `pytest tests/cri -m cri` with FLOXK_CRI_LINE set
(pytest's own output goes to stderr); then stdout gets exactly one summary per line:

    containerd 1.6.20: 9 passed, 0 failed

(", K skipped" is added when tests were skipped). Exit status 1 if any line had a failure
or an error, or ran no test; 2 if the containerd lines are not installed.
The lines expected are the pins in scripts/install-containerd.sh.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.cri.harness import cache_dir, installed_lines

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-containerd.sh"
LINE_ENV = "FLOXK_CRI_LINE"


def pinned_lines(script: Path = INSTALL_SCRIPT) -> list[str]:
    """The X.Y.Z versions pinned in install-containerd.sh (lines like `"1.7.24 trixie ..."`)."""
    return re.findall(r'^\s*"(\d+\.\d+\.\d+) \S+ \S+"\s*$', script.read_text(), re.MULTILINE)


def counts(junit_xml: Path) -> dict[str, int]:
    """passed/failed/skipped from a pytest JUnit report; errors count as failed."""
    root = ET.parse(junit_xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = failed = skipped = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return {"passed": max(total - failed - skipped, 0), "failed": failed, "skipped": skipped}


def summary(version: str, c: dict[str, int]) -> str:
    text = f"containerd {version}: {c['passed']} passed, {c['failed']} failed"
    return text + (f", {c['skipped']} skipped" if c["skipped"] else "")


def run_line(version: str, pytest_args: list[str]) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="floxk-cri-junit-") as tmp:
        report = Path(tmp) / "report.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "tests/cri",
            "-m",
            "cri",
            f"--junitxml={report}",
            "-p",
            "no:cacheprovider",
            *pytest_args,
        ]
        print(f"=== containerd {version}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        # pytest's report goes to our stderr (fd 2): stdout carries only the summaries.
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, LINE_ENV: version}, stdout=2)
        if not report.exists():
            return {"passed": 0, "failed": 1 if proc.returncode not in (0, 5) else 0, "skipped": 0}
        c = counts(report)
        if proc.returncode not in (0, 5) and c["failed"] == 0:
            c["failed"] = 1  # pytest failed outside any test (usage, internal error)
        return c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--line", action="append", help="run only this containerd version (repeatable)"
    )
    args, pytest_args = parser.parse_known_args(argv)

    wanted = args.line or pinned_lines()
    have = {line.version for line in installed_lines()}
    missing = [v for v in wanted if v not in have]
    if missing:
        print(
            f"containerd {', '.join(missing)} not installed under {cache_dir()}:"
            f" run scripts/install-containerd.sh",
            file=sys.stderr,
        )
        return 2

    results = {version: run_line(version, pytest_args) for version in wanted}
    status = 0
    for version, c in results.items():
        print(summary(version, c), flush=True)
        if c["failed"] or c["passed"] == 0:
            status = 1
    # One closing line in the plain "N passed, N failed" form, for whoever reads only the end.
    passed = sum(c["passed"] for c in results.values())
    failed = sum(c["failed"] for c in results.values())
    print(f"cri: {passed} passed, {failed} failed", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
