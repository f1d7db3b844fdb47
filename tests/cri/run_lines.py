"""Run the CRI suite once per (containerd, runc) pair: `python3 -m tests.cri.run_lines [--line X.Y.Z]
[--runc X.Y.Z] [--smoke] [pytest args]`.

`task test:cri` calls this. Each pair runs `pytest tests/cri -m cri` with FLOXK_CRI_LINE and
FLOXK_CRI_RUNC set (pytest's own output goes to stderr); then stdout gets exactly one summary
per pair and a total:

    containerd 2.3.7 runc 1.4.4: 26 passed, 0 failed
    cri: 260 passed, 0 failed (10 pairs, 412 s)

(", K skipped" is added when tests were skipped). Exit status 1 if any pair had a failure
or an error, or ran no test; 2 if a line or runc of the matrix is not installed.
The pairs are testkit/lines.py's matrix() (the pins of the install scripts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from testkit import lines

REPO = lines.REPO
LINE_ENV = "FLOXK_CRI_LINE"


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


def summary(containerd: str, runc: str, c: dict[str, int]) -> str:
    text = f"containerd {containerd} runc {runc}: {c['passed']} passed, {c['failed']} failed"
    return text + (f", {c['skipped']} skipped" if c["skipped"] else "")


def run_pair(containerd: str, runc: str, pytest_args: list[str]) -> dict[str, int]:
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
        print(
            f"=== containerd {containerd} runc {runc}: {' '.join(cmd[1:])}",
            file=sys.stderr,
            flush=True,
        )
        env = {**os.environ, LINE_ENV: containerd, lines.RUNC_ENV: runc}
        # pytest's report goes to our stderr (fd 2): stdout carries only the summaries.
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=2)
        if not report.exists():
            return {"passed": 0, "failed": 1 if proc.returncode not in (0, 5) else 0, "skipped": 0}
        c = counts(report)
        if proc.returncode not in (0, 5) and c["failed"] == 0:
            c["failed"] = 1  # pytest failed outside any test (usage, internal error)
        return c


def missing(pairs: list[tuple[str, str]]) -> list[str]:
    """What the pairs need and is not installed, e.g. ["containerd 2.4.2", "runc 1.5.3"]."""
    have_c = {line.version for line in lines.installed_lines()}
    have_r = {r.version for r in lines.installed_runcs()}
    out = [f"containerd {c}" for c in dict.fromkeys(c for c, _ in pairs) if c not in have_c]
    return out + [f"runc {r}" for r in dict.fromkeys(r for _, r in pairs) if r not in have_r]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--line", action="append", help="only pairs with this containerd version (repeatable)"
    )
    parser.add_argument("--runc", action="append", help="only pairs with this runc (repeatable)")
    args, pytest_args = parser.parse_known_args(argv)

    pairs = lines.matrix()
    if args.line:
        known = {c for c, _ in pairs}
        pairs = [p for p in pairs if p[0] in args.line]
        # A line outside the matrix (e.g. an extra one in the cache) runs with Debian's runc.
        debian = lines.debian_runc()
        pairs += [(c, debian.version if debian else "debian") for c in args.line if c not in known]
    if args.runc:
        pairs = [p for p in pairs if p[1] in args.runc]
    if not pairs:
        print("no (containerd, runc) pair selected", file=sys.stderr)
        return 2
    absent = missing(pairs)
    if absent:
        print(
            f"{', '.join(absent)} not installed under {lines.cache_dir()}: {lines.INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2

    start = time.monotonic()
    results = {pair: run_pair(*pair, pytest_args) for pair in pairs}
    status = 0
    for (containerd, runc), c in results.items():
        print(summary(containerd, runc, c), flush=True)
        if c["failed"] or c["passed"] == 0:
            status = 1
    # One closing line in the plain "N passed, N failed" form, for whoever reads only the end.
    passed = sum(c["passed"] for c in results.values())
    failed = sum(c["failed"] for c in results.values())
    took = time.monotonic() - start
    print(f"cri: {passed} passed, {failed} failed ({len(pairs)} pairs, {took:.0f} s)", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
