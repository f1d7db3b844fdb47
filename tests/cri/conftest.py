"""Fixtures of the CRI suite: one real containerd line per pytest run.

The line comes from FLOXK_CRI_LINE (e.g. "1.7.24"; tests/cri/run_lines.py sets it per pair),
unset, the newest installed line; the runc from FLOXK_CRI_RUNC (e.g. "1.4.4"), unset, Debian's
(testkit/lines.py). Fixtures (documented in docs/testing.md):

  containerd_line   session  harness.Line of the line under test
  runc_line         session  lines.Runc: the real runc under test (.version, .path)
  cri_images        session  {"pause"|"stub"|"plain": images.Image} (built once per run)
  start_containerd  function factory: start_containerd(**options) -> harness.Containerd,
                             stopped and cleaned up after the test
  containerd        session  the shared daemon (runtimes "runc" and "flox")
  cri               function harness.CRI on the shared daemon; at teardown every pod is
                             removed and the node must be clean

  start_flox_node   session  factory for suites with a node of their own (node.toml, a hub):
                             start_flox_node(work, server=..., **node_settings) -> started
                             harness.Containerd on the generated fronts
checked_cri(request, node) is the body of such a suite's cri fixture.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shim.front import write_front, write_shim_front
from testkit import harness, lines
from testkit.images import Image, build_images
from testkit.oci import write_node_toml

LINE_ENV = "FLOXK_CRI_LINE"
INSTALL_HINT = lines.INSTALL_HINT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell a failed test at teardown."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _show_log_if_failed(request: pytest.FixtureRequest, daemon: harness.Containerd) -> None:
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(
            f"--- containerd {daemon.line.version} log ({daemon.log_path}) ---\n{daemon.log_tail(60)}",
            file=sys.stderr,
        )


@pytest.fixture(scope="session")
def containerd_line() -> harness.Line:
    if os.geteuid() != 0:
        pytest.skip("the CRI suite needs root (containerd, mounts)")
    lines = harness.installed_lines()
    if not lines:
        pytest.fail(
            f"no containerd line installed under {lines.cache_dir() / 'containerd'}: {INSTALL_HINT}"
        )
    wanted = os.environ.get(LINE_ENV)
    if not wanted:
        return lines[-1]
    for line in lines:
        if line.version == wanted:
            return line
    pytest.fail(
        f"{LINE_ENV}={wanted} is not installed (have {', '.join(v.version for v in lines)}):"
        f" {INSTALL_HINT}"
    )


@pytest.fixture(scope="session")
def runc_line() -> lines.Runc:
    try:
        return lines.runc_under_test()
    except LookupError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def cri_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    return build_images(tmp_path_factory.mktemp("cri-images"))


@pytest.fixture
def start_containerd(
    request: pytest.FixtureRequest,
    containerd_line: harness.Line,
    runc_line: lines.Runc,
    cri_images: dict[str, Image],
) -> Iterator[Callable[..., harness.Containerd]]:
    """Factory for private daemons: start_containerd(flox_shim=..., flox_runc=..., env=...,
    extra_config=..., restrict_oom_score_adj=...) -> started harness.Containerd."""
    started: list[harness.Containerd] = []

    def start(**options) -> harness.Containerd:
        shim, runc = harness.default_flox_paths()
        options.setdefault("flox_shim", shim)
        options.setdefault("flox_runc", runc)
        options.setdefault("runc", str(runc_line.path))
        daemon = harness.Containerd(line=containerd_line, images=cri_images, **options)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        _show_log_if_failed(request, daemon)
        daemon.stop()


@pytest.fixture(scope="session")
def containerd(
    containerd_line: harness.Line, runc_line: lines.Runc, cri_images: dict[str, Image]
) -> Iterator[harness.Containerd]:
    shim, runc = harness.default_flox_paths()
    daemon = harness.Containerd(
        line=containerd_line,
        images=cri_images,
        flox_shim=shim,
        flox_runc=runc,
        runc=str(runc_line.path),
    )
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def cri(request: pytest.FixtureRequest, containerd: harness.Containerd) -> Iterator[harness.CRI]:
    yield containerd.cri
    _show_log_if_failed(request, containerd)
    # A test leaves pods behind only when it failed midway: clean up so later tests start
    # from an empty node, then insist the node really is clean (stop/remove worked).
    containerd.cri.remove_all()
    containerd.cri.assert_node_clean()


def _start_flox_node(
    work: Path,
    containerd_line: harness.Line,
    runc_line: lines.Runc,
    cri_images: dict[str, Image],
    *,
    server: str | os.PathLike[str] | None = None,
    **settings,
) -> harness.Containerd:
    """Start containerd whose flox handler runs the generated fronts (written under
    work/bin, with the create server `server` if given); the node's node.toml holds
    `settings` (hubs, trusted_public_keys, ...), its state dir is work/state, its store
    work/store."""
    cfg = write_node_toml(
        work / "node.toml",
        state_dir=str(work / "state"),
        store_root=str(work / "store"),
        **settings,
    )
    front = write_front(work / "bin" / "floxk-runc", str(runc_line.path), server=server)
    runc_v2 = str(containerd_line.runc_shim)
    shim = write_shim_front(work / "bin" / "containerd-shim-flox-v2", runc_v2, server=server)
    daemon = harness.Containerd(
        line=containerd_line,
        images=cri_images,
        flox_shim=str(shim),
        flox_runc=str(front),
        runc=str(runc_line.path),
        env={"FLOXK_NODE_CONFIG": str(cfg)},
    )
    daemon.start()
    return daemon


@pytest.fixture(scope="session")
def start_flox_node(
    containerd_line: harness.Line, runc_line: lines.Runc, cri_images: dict[str, Image]
) -> Callable[..., harness.Containerd]:
    """start_flox_node(work, server=None, **node_settings) -> a started harness.Containerd
    on the line under test (see _start_flox_node); the caller stops it."""

    def start(work: Path, **options) -> harness.Containerd:
        return _start_flox_node(work, containerd_line, runc_line, cri_images, **options)

    return start


def checked_cri(
    request: pytest.FixtureRequest, node: dict, *, no_uses_left: bool = False
) -> Iterator[harness.CRI]:
    """A cri fixture's body on `node` ({"daemon", "cri", "state", ...}): yields its CRI; at
    teardown shows the daemon's log (and the node log) if the test failed, removes every
    pod and insists the node is clean (and, with `no_uses_left`, that no pod's use of an
    environment is left in the state dir)."""
    yield node["cri"]
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(node["daemon"].log_tail(60))
        log = node["state"] / "floxk.log"
        print(log.read_text()[-3000:] if log.exists() else "(no node log)")
    node["cri"].remove_all()
    if no_uses_left:
        assert_released(node["cri"], node["state"])
    else:
        node["cri"].assert_node_clean()


def assert_released(cri: harness.CRI, state: Path) -> None:
    """The node is clean (no pod, container or mount left) and no pod's use of an
    environment is left in the node's state dir `state`."""
    cri.assert_node_clean()
    uses = sorted(p.name for p in (state / "uses").glob("*/*"))
    assert uses == [], f"uses left after every pod is gone: {uses}"
