"""Nodes that run for months, through CRI: containerd restarted under running flox pods, and
uninstall refusing while flox containers still run.

The node is installed the way `floxk shim install` does it (zipapps from `floxk shim build`
in a private bin dir, the line's own default config made private: see test_install.py,
whose NodeDaemon and fixtures this reuses). containerd restarts as a plain process, which
is what systemd's restart does to it as well: SIGTERM, then the same command again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from shim import server
from shim.core import containerd as ctrd
from shim.core.errors import InUseError
from shim.installer.detect import detect_node, live_flox_tasks
from shim.installer.install import install
from shim.installer.layout import GC_SERVICE, GC_TIMER
from shim.installer.uninstall import uninstall
from testkit import lines
from testkit.images import STUB_IMAGE
from tests.cri.conftest import assert_released
from tests.cri.test_install import daemon, flox_node  # noqa: F401 - fixtures
from tests.install import nodeconf

pytestmark = [pytest.mark.cri, pytest.mark.root, pytest.mark.nix]

TICKER = ["sh", "-c", 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.3; done']


def _installed(daemon, flox_node, cri_images, **options):  # noqa: F811 - the fixtures' names
    line = daemon.line
    daemon.config_path.write_text(
        nodeconf.node_config(
            line.version,
            nodeconf.default_config(line.containerd, daemon.etc),
            daemon.dir,
            cri_images["pause"].ref,
            ctrd.needs_restrict_oom_score_adj(),
        )  # fmt: skip
    )
    kw = {
        "config": daemon.config_path,
        "containerd": str(line.containerd),
        "bin_dir": str(flox_node["bin"]),
    }
    assert install(**kw, runc=_runc(), **options).verified
    daemon.start()
    return kw


def _runc() -> str:
    """The pair's runc, as test_install installs with it."""
    return str(lines.runc_under_test().path)


def _ticking_pod(cri):
    pod = cri.run_pod("ticker", {"flox.dev/environment": "acme/plain"})
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=TICKER)
    cri.start(cid)
    assert "tick 2" in cri.logs(cid, contains="tick 2", timeout=30)
    return pod, cid


def _last_tick(cri, cid) -> int:
    ticks = [int(t.split()[1]) for s, t in cri.log_entries(cid) if t.startswith("tick ")]
    return max(ticks, default=0)


def _restart(daemon) -> None:  # noqa: F811
    """What `systemctl restart containerd` does: SIGTERM, wait, the same command again."""
    old = daemon.cri
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(timeout=30)
    daemon.start()
    # A new client knows nothing of the old one's pods: carry over where their logs go.
    daemon.cri._pods.update(old._pods)
    daemon.cri._log_paths.update(old._log_paths)
    old.close()


def test_containerd_restart_keeps_flox_pods_running_exec_logs_and_stop_work(
    daemon,  # noqa: F811
    flox_node,  # noqa: F811
    cri_images,
):
    _installed(daemon, flox_node, cri_images)
    cri = daemon.cri
    pod, cid = _ticking_pod(cri)
    shims = daemon.shim_pids()
    assert shims, "no shim runs the pod"

    _restart(daemon)
    cri = daemon.cri
    # The pod's shim and workload were never touched.
    assert set(shims) <= set(daemon.shim_pids())
    assert cri.status(cid).state == 1  # CONTAINER_RUNNING
    before = _last_tick(cri, cid)
    # Logs: containerd re-attached to the running container's output.
    assert f"tick {before + 3}" in cri.logs(cid, contains=f"tick {before + 3}", timeout=30)
    # Exec through the fronts sees the environment.
    code, out, err = cri.exec_sync(cid, ["hello"])
    assert (code, out) == (0, "hello from floxk\n"), err
    # A new pod after the restart works too.
    pod2, cid2 = _ticking_pod(cri)
    # Stop: through the floxk-runc front (kill, delete), which releases the use.
    cri.stop(cid, grace=2)
    assert cri.status(cid).state == 2  # CONTAINER_EXITED
    cri.remove_pod(pod)
    cri.remove_pod(pod2)
    assert_released(cri, flox_node["node_toml"].parent / "state")


def test_uninstall_refuses_while_flox_pods_run_and_lists_them(
    daemon,  # noqa: F811
    flox_node,  # noqa: F811
    cri_images,
    containerd_line,
    monkeypatch,
):
    units = daemon.etc / "systemd"
    kw = _installed(daemon, flox_node, cri_images, systemd_dir=str(units))
    _check_gc_timer(units, flox_node)
    cri = daemon.cri
    plain = cri.run_pod("plain", {}, runtime_handler="")  # plain runc: not floxk's to count
    pod, cid = _ticking_pod(cri)
    config_before = daemon.config_path.read_text()
    bin_before = sorted(p.name for p in flox_node["bin"].iterdir())

    with pytest.raises(InUseError) as refused:
        uninstall(**kw)
    assert cid in refused.value.message and "k8s.io/" in refused.value.message
    assert pod in refused.value.message  # the sandbox runs through the flox shim too
    assert plain not in refused.value.message
    assert "--force" in refused.value.hint
    assert daemon.config_path.read_text() == config_before
    assert sorted(p.name for p in flox_node["bin"].iterdir()) == bin_before

    # The CLI says the same, with its exit code; a dry run lists them as a note.
    r = subprocess.run(
        [sys.executable, "-c", "from shim.nodecli import main; main()", "uninstall",
         "--config", str(kw["config"]), "--containerd", kw["containerd"],
         "--bin-dir", kw["bin_dir"]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == InUseError.exit_code and cid in r.stderr, r.stderr
    dry = uninstall(**kw, dry_run=True)
    assert any("still running" in n for n in dry.notes)

    # --force removes it anyway; installing again at the same paths gives the running
    # pod its exec and stop back.
    forced = uninstall(**kw, force=True)
    assert any("--force" in n for n in forced.notes)
    assert "floxk-runc-front" not in {p.name for p in flox_node["bin"].iterdir()}
    install(**kw, runc=_runc())
    code, out, _ = cri.exec_sync(cid, ["hello"])
    assert (code, out) == (0, "hello from floxk\n")
    cri.stop(cid, grace=2)
    cri.remove_pod(pod)
    cri.remove_pod(plain)
    cri.assert_node_clean()

    # Nothing of flox runs any more: uninstall goes through.
    node = detect_node(kw["config"], kw["containerd"])
    end = time.monotonic() + 15  # containerd removes a deleted task's directory a moment later
    while live_flox_tasks(node, kw["bin_dir"]) and time.monotonic() < end:
        time.sleep(0.2)
    assert live_flox_tasks(node, kw["bin_dir"]) == []
    # The flox sandboxes' prefetch left the node's create server running; uninstall stops
    # it (it runs the zipapps' code, whose runtime is gone). containerd 1.6 never runs the
    # wrapper shim, so no prefetch and no server there.
    state = flox_node["node_toml"].parent / "state"
    has_server = not containerd_line.version.startswith("1.6")
    assert bool(server.running(state)) == has_server, "create server running on 1.6, or none"
    monkeypatch.setenv("FLOXK_NODE_CONFIG", str(flox_node["node_toml"]))
    done = uninstall(**kw)
    assert server.running(state) is None
    assert any("stopped the create server" in n for n in done.notes) == has_server, done.notes
    assert "floxk-runc-front" not in {p.name for p in flox_node["bin"].iterdir()}
    left = sorted(p.name for p in units.rglob("*") if not p.is_dir())
    assert left == ["node.toml"]


def _check_gc_timer(units, flox_node) -> None:  # noqa: F811
    """The timer's units, enabled, and the service's command works on this node."""
    timer = (units / GC_TIMER).read_text()
    assert "OnUnitActiveSec=300s" in timer and "WantedBy=timers.target" in timer
    wants = units / "timers.target.wants" / GC_TIMER
    assert wants.is_symlink() and wants.resolve() == (units / GC_TIMER).resolve()
    service = (units / GC_SERVICE).read_text()
    (command,) = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    argv = command.removeprefix("ExecStart=").split()
    assert argv[-3:] == [f"{flox_node['bin']}/floxk-node", "gc", "--auto"]
    high = units / "node.toml"  # the test node's, with a high mark this disk is below
    high.write_text(flox_node["node_toml"].read_text() + "[gc]\nhigh_percent = 100\n")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                       env={"FLOXK_NODE_CONFIG": str(high)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["reason"] == "timer" and result["ran"] is False
