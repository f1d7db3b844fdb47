"""The suite's pytest plugin (`-p e2e.plugin`): options, the session's cluster, the report.

The cluster is a session fixture: the first case that needs it creates it through a
pytest-kubernetes manager driven by floxk's own `up` (e2e/providers.py), the end of the
session removes it (kind/k3d, unless --floxk-keep) or only the suite's namespace
(existing). A cluster that cannot be had ends the session at once with floxk's message and
hint (the report's session_error), instead of failing every case with the same story.

The report (--floxk-report FILE) is JSON: one entry per case (result, seconds, the short
reason of a failure) plus the suite's own setup and teardown seconds, so a case's time is
its own and not the cluster's creation.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from floxk._cluster.constants import DEFAULT_E2E_CLUSTER_NAME
from shim.core.errors import FloxkError

FLOXK_OPTIONS = {
    "provider": ("kind", "kind, k3d or existing (the kubeconfig's current context)"),
    "name": (DEFAULT_E2E_CLUSTER_NAME, "cluster name for kind/k3d"),
    "kubeconfig": (None, "kubeconfig for --floxk-provider existing (a private copy is used)"),
    "workers": ("1", "worker nodes besides the control plane (kind/k3d)"),
    "base-image": (None, "kind node image to build FROM (default: floxk up's)"),
    "timeout": ("600", "seconds allowed for the cluster to come up"),
    "report": (None, "write the JSON report here"),
}


def pytest_addoption(parser) -> None:
    group = parser.getgroup("floxk-e2e")
    for name, (default, help_text) in FLOXK_OPTIONS.items():
        group.addoption(f"--floxk-{name}", default=default, help=help_text)
    group.addoption("--floxk-keep", action="store_true", help="leave the cluster/namespace")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "k8s: needs a cluster (pytest-kubernetes' marker)")
    config.addinivalue_line("markers", "node: needs shell access to the nodes (kind, k3d)")
    config.stash[REPORT] = Report(config.getoption("floxk_report"))
    config.pluginmanager.register(config.stash[REPORT], "floxk-e2e-report")


def _opt(config, name: str) -> Any:
    return config.getoption("floxk_" + name.replace("-", "_"))


def fail_session(request, error: FloxkError) -> None:
    request.config.stash[REPORT].session_error = {"message": error.message, "hint": error.hint}
    # The report's session_error, not this code, is what `floxk e2e` exits on.
    message = f"{error.message}" + (f" (hint: {error.hint})" if error.hint else "")
    pytest.exit(message, pytest.ExitCode.INTERNAL_ERROR)


@pytest.fixture(scope="session")
def cluster(request, tmp_path_factory):
    """The cluster under test (e2e.kit.Cluster), created on first use."""
    from e2e import kit, providers
    from floxk._cluster import kube
    from floxk._cluster.apply import wait_default_service_account

    config = request.config
    report: Report = config.stash[REPORT]
    provider = _opt(config, "provider")
    keep = bool(_opt(config, "keep"))
    try:
        manager = providers.make_manager(
            provider,
            name=_opt(config, "name"),
            kubeconfig=Path(_opt(config, "kubeconfig")) if _opt(config, "kubeconfig") else None,
            workers=int(_opt(config, "workers")),
            base_image=_opt(config, "base-image"),
            timeout=int(_opt(config, "timeout")),
            progress=lambda msg: print(f"[cluster] {msg}", file=sys.stderr, flush=True),
        )
        private = Path(manager.kubeconfig)  # our copy: never the user's file
        request.addfinalizer(lambda: private.unlink(missing_ok=True))
        manager.create(timeout=int(_opt(config, "timeout")))
        api = kube.api_client(manager.context, config_file=manager.kubeconfig)
        if not kube.has_runtime_class(api):
            raise FloxkError(
                f"context {manager.context} has no RuntimeClass flox: not a flox cluster",
                hint="create one with `floxk up`, or install the runtime (docs/install.md)",
            )
    except FloxkError as e:
        fail_session(request, e)
    except RuntimeError as e:  # pytest-kubernetes' "cluster is not ready"
        fail_session(request, FloxkError(str(e), hint="floxk doctor checks the cluster"))
    run_id = secrets.token_hex(4)
    handle = kit.Cluster(
        provider=provider,
        context=manager.context,
        kubeconfig=Path(manager.kubeconfig),
        namespace=f"floxk-e2e-{run_id}",
        run_id=run_id,
        api=api,
        manager=manager,
        tmp=tmp_path_factory.mktemp("e2e"),
    )
    handle.core.create_namespace({"metadata": {"name": handle.namespace}})
    wait_default_service_account(handle.api, handle.namespace)
    report.suite.update(provider=provider, context=handle.context, namespace=handle.namespace)
    yield handle
    t1 = time.monotonic()
    if keep:
        report.suite["kept"] = True
    elif provider == "existing":
        handle.core.delete_namespace(handle.namespace)
    else:
        manager.delete()
    report.suite["teardown_seconds"] += time.monotonic() - t1


@pytest.fixture(scope="session")
def catalog(tmp_path_factory) -> str:
    """The suite's package catalog as a flake ref (built with Nix, no internet)."""
    from e2e.catalog import prepare

    return prepare(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="session")
def publish(cluster, catalog):
    """publish(name, manifest_text) -> kit.Published: `floxk env lock` against the catalog,
    then `floxk env push` without --to (the cluster's dev hub, as users do)."""
    from e2e.kit import Published
    from floxk._proc import call

    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    counter = iter(range(1_000_000))

    def floxk(*args: str) -> str:
        proc = call([sys.executable, "-m", "floxk", *args], check=False, env=env)
        if proc.returncode != 0:
            raise AssertionError(f"floxk {' '.join(args)} failed: {proc.stderr.strip()[-800:]}")
        return proc.stdout

    def publish_env(name: str, manifest: str) -> Published:
        directory = cluster.tmp / f"env-{next(counter)}"
        directory.mkdir()
        (directory / "manifest.toml").write_text(manifest)
        floxk("env", "lock", str(directory), "--catalog", catalog)
        pushed = json.loads(floxk("env", "push", str(directory), "--name", name, "-o", "json"))
        return Published(pushed["ref"], name, pushed["generation"], pushed["digest"])

    return publish_env


# --- the report --------------------------------------------------------------------------------

REPORT = pytest.StashKey["Report"]()


class Report:
    """Collects one entry per case from pytest's reports; writes JSON at the end."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.cases: dict[str, dict[str, Any]] = {}
        self.suite: dict[str, Any] = {"setup_seconds": 0.0, "teardown_seconds": 0.0}
        self.session_error: dict[str, Any] | None = None
        self.session_fixture_seconds = 0.0  # not yet taken off a case's setup time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        """Session fixtures (cluster, environments) are the suite's time: counted there and
        taken off the setup time of the case that happened to need them first."""
        t0 = time.monotonic()
        yield
        if fixturedef.scope == "session":
            elapsed = time.monotonic() - t0
            self.suite["setup_seconds"] += elapsed
            self.session_fixture_seconds += elapsed

    def pytest_runtest_logreport(self, report) -> None:
        entry = self.cases.setdefault(report.nodeid, _entry(report.nodeid, ""))
        seconds = report.duration
        if report.when == "setup":
            seconds = max(0.0, seconds - self.session_fixture_seconds)
            self.session_fixture_seconds = 0.0
        if report.when == "teardown":  # the last case's teardown ends the session's fixtures
            seconds = max(0.0, seconds - self.suite["teardown_seconds"])
        entry["seconds"] = round(entry["seconds"] + seconds, 2)
        if report.failed:
            entry["result"] = "failed" if report.when == "call" else "error"
            entry["message"] = _failure_reason(report)
        elif report.skipped:
            entry["result"] = "skipped"
            entry["message"] = _skip_reason(report)
        elif report.when == "call":
            entry["result"] = "passed"

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            doc = (getattr(item, "function", None).__doc__ or "").strip()
            self.cases[item.nodeid] = _entry(
                item.name, doc.splitlines()[0].rstrip(".") if doc else item.name
            )

    def pytest_deselected(self, items) -> None:
        for item in items:
            self.cases.pop(item.nodeid, None)

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        data = {
            "cases": list(self.cases.values()),
            "suite": {
                **self.suite,
                "setup_seconds": round(self.suite["setup_seconds"], 2),
                "teardown_seconds": round(self.suite["teardown_seconds"], 2),
            },
            "session_error": self.session_error,
            "pytest_exit": int(exitstatus),
        }
        if self.path:
            Path(self.path).write_text(json.dumps(data, indent=2) + "\n")


def _entry(case: str, title: str) -> dict[str, Any]:
    return {"case": case, "title": title, "result": "not run", "seconds": 0.0}


def _failure_reason(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    text = text.split("\nassert ", 1)[0]  # the message, not pytest's rewrite of the expression
    return " ".join(text.split())[:1200]


def _skip_reason(report) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)
