"""`floxk e2e`: run the verification suite (e2e/, pytest) and return its report as data.

pytest runs in a child process on the suite shipped in the package (e2e/cases with the
e2e.plugin plugin), under a pytest.ini of its own (so a project's pytest configuration
around the checkout never leaks in). Its output lines go to `progress` as they come; the
result is read from the JSON report the plugin writes, not parsed from that output.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pytest import ExitCode

import e2e
from floxk._cluster import provider as cluster_providers
from floxk._cluster.constants import DEFAULT_E2E_CLUSTER_NAME
from floxk._exit import ExitStatus
from floxk._proc import call
from shim.core.errors import ConfigError, FloxkError, NotFoundError

E2E_DIR = Path(e2e.__file__).resolve().parent
CASES_DIR = E2E_DIR / "cases"
# kind and k3d clusters made by `floxk up`, or the kubeconfig's current context as it is.
PROVIDERS = (*cluster_providers.NAMES, "existing")
RESULTS = ("passed", "failed", "error", "skipped", "not run")
# pytest's own exit codes that are not "the cases ran": passed on as floxk's exit code.
_PYTEST_TROUBLE = (ExitCode.INTERRUPTED, ExitCode.INTERNAL_ERROR, ExitCode.USAGE_ERROR)
_INI = """\
[pytest]
addopts =
console_output_style = classic
"""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Suite:
    """One run's options (the `floxk e2e` options of the same names)."""

    provider: str = "kind"
    name: str = DEFAULT_E2E_CLUSTER_NAME
    kubeconfig: Path | None = None
    keep: bool = False
    select: str | None = None
    junit: Path | None = None
    workers: int = 1
    base_image: str | None = None
    timeout: int = 600

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Suite:
        """The suite of a command's parsed options (others, like -o, are left out)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def pytest_argv(self, *, report: Path, ini: Path) -> list[str]:
        """The pytest command line for one run (pure: tests check it)."""
        argv = [sys.executable, "-m", "pytest", str(CASES_DIR), "-c", str(ini)]
        argv += ["--rootdir", str(E2E_DIR), "-p", "e2e.plugin", "-p", "no:cacheprovider"]
        # -s: the cluster fixture's progress (floxk up) shows while it happens.
        argv += ["-v", "-s", "--tb=short", "--no-header", "-rN"]
        argv += ["--floxk-provider", self.provider, "--floxk-name", self.name]
        argv += ["--floxk-report", str(report)]
        argv += ["--floxk-workers", str(self.workers), "--floxk-timeout", str(self.timeout)]
        if self.kubeconfig is not None:
            argv += ["--floxk-kubeconfig", str(Path(self.kubeconfig).resolve())]
        if self.base_image:
            argv += ["--floxk-base-image", self.base_image]
        if self.keep:
            argv += ["--floxk-keep"]
        if self.select:
            argv += ["-k", self.select]
        if self.junit is not None:
            argv += ["--junitxml", str(Path(self.junit).resolve())]
        return argv


def run_suite(suite: Suite, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run the suite; returns {"provider", "context", "cases": [{case, title, result,
    seconds, message?}], "summary": {result: count, "seconds"}, "suite": {...},
    "junit", "exit_code"}. A cluster that cannot be had raises floxk's error for it."""
    say = progress or (lambda _line: None)
    if suite.provider not in PROVIDERS:
        raise ConfigError(
            f"unknown provider {suite.provider!r}", hint=f"use one of: {', '.join(PROVIDERS)}"
        )
    kubeconfig = suite.kubeconfig
    if kubeconfig is not None and suite.provider != "existing":
        raise ConfigError("--kubeconfig goes with --provider existing")
    if kubeconfig is not None and not Path(kubeconfig).is_file():
        raise NotFoundError(f"kubeconfig {kubeconfig} does not exist")
    with tempfile.TemporaryDirectory(prefix="floxk-e2e-") as tmp:
        ini, report = Path(tmp) / "pytest.ini", Path(tmp) / "report.json"
        ini.write_text(_INI)
        proc = call(suite.pytest_argv(report=report, ini=ini), say=say, check=False, cwd=tmp)
        code, tail = proc.returncode, proc.stdout.splitlines()
        data = json.loads(report.read_text()) if report.is_file() else None
    if data is None:
        raise FloxkError(
            f"the suite did not run (pytest exited with {code})",
            hint="its output:\n" + "\n".join(tail),
        )
    return summarize(data, code, select=suite.select, junit=suite.junit)


def summarize(
    data: dict[str, Any], pytest_exit: int, *, select: str | None = None, junit: Path | None = None
) -> dict[str, Any]:
    """The plugin's report plus counts and floxk's exit code (pure: tests check it)."""
    error = data.get("session_error")
    if error:
        raise FloxkError(error["message"], hint=error.get("hint"))
    cases = data.get("cases", [])
    if pytest_exit == ExitCode.NO_TESTS_COLLECTED or not cases:
        raise NotFoundError(
            f"no case matches -k {select!r}" if select else "the suite has no cases",
            hint="floxk e2e -o json lists the cases' names in a full run; -k takes pytest's syntax",
        )
    counts = {r: sum(1 for c in cases if c["result"] == r) for r in RESULTS}
    bad = counts["failed"] + counts["error"]
    suite = data.get("suite", {})
    if pytest_exit in _PYTEST_TROUBLE:
        exit_code = int(pytest_exit)  # pytest's own trouble, not the cases' verdict
    else:
        exit_code = ExitStatus.FAILURE if bad + counts["not run"] else ExitStatus.OK
    seconds = sum(c["seconds"] for c in cases)
    seconds += suite.get("setup_seconds", 0) + suite.get("teardown_seconds", 0)
    return {
        "provider": suite.get("provider"),
        "context": suite.get("context"),
        "namespace": suite.get("namespace"),
        "kept": bool(suite.get("kept")),
        "cases": cases,
        "summary": {**counts, "seconds": round(seconds, 1)},
        "suite": suite,
        "junit": str(Path(junit).resolve()) if junit else None,
        "pytest_exit": pytest_exit,
        "exit_code": exit_code,
    }
