"""`floxk shim install` on the line under test, then a flox pod through CRI on that config.

The node's config starts as the line's own `containerd config default` (made private to a
temp dir: root, state, sockets, pause image, and the imports that on 2.2+ name the host's
conf.d; see tests/install/nodeconf.py), either edited in place or with the CRI settings in
an imported file. The daemon refuses to start on a config that imports host files. The runtime is installed from zipapps
built by `floxk shim build` into a private bin dir; containerd runs with a bare PATH, so the
zipapps run on the system python3. Then: the dump shows the runtime, a flox pod prints from
its environment, a second install changes no byte, uninstall gives the original bytes back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from floxk._shimbuild import build_zipapps
from shim.core import containerd as ctrd
from shim.installer.detect import _alive, runtimes
from shim.installer.install import install
from shim.installer.uninstall import uninstall
from testkit import harness
from testkit.images import STUB_IMAGE
from testkit.oci import publish_test_hub, write_node_toml
from tests.install import nodeconf

pytestmark = [pytest.mark.cri, pytest.mark.root, pytest.mark.nix]
BARE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class _Adopted:
    """A containerd the installer restarted: a pid this test did not spawn itself."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self):
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped elsewhere (subprocess's own cleanup)
            if not _alive(self.pid):
                self.returncode = 0
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout=None):
        deadline = time.monotonic() + (timeout or 60)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("containerd", timeout)
            time.sleep(0.1)
        return self.returncode


class NodeDaemon(harness.Containerd):
    """containerd reading the config file the test and the installer wrote (not generated).

    The config lives in `etc`, apart from the daemon's dir (which stop() deletes), so the
    test can install again and uninstall after the daemon is gone.
    """

    etc: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.etc / "config.toml"

    def start(self, timeout: float = 60) -> NodeDaemon:
        nodeconf.assert_private(self.config_path, self.etc)
        env = {**os.environ, "PATH": f"{self.line.bin_dir}:{BARE_PATH}", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.line.containerd), "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        self.cri = harness.CRI(self.socket, self.pod_logs, containerd=self)
        self.wait_ready(timeout)
        for image in self.images.values():
            self.ctr("images", "import", "--snapshotter", "overlayfs", str(image.archive))
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (self.socket.exists() and self.cri.ready()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not come up:\n{self.log_tail()}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def flox_node(tmp_path_factory):
    """Zipapps, a signed hub with acme/plain and a node.toml pointing at it."""
    work = tmp_path_factory.mktemp("install-node")
    hub = publish_test_hub(work / "hub")
    cfg = write_node_toml(
        work / "node.toml",
        hubs=[hub.url],
        trusted_public_keys=[hub.key],
        state_dir=str(work / "state"),
        store_root=str(work / "store"),
    )
    build_zipapps(work / "bin")
    return {"bin": work / "bin", "node_toml": cfg}


@pytest.fixture
def daemon(request, containerd_line, cri_images, flox_node, tmp_path):
    d = NodeDaemon(
        line=containerd_line, images=cri_images, flox_shim="", flox_runc="",
        env={"FLOXK_NODE_CONFIG": str(flox_node["node_toml"])},
    )  # fmt: skip
    d.dir = Path(tempfile.mkdtemp(prefix=f"floxk-install-{containerd_line.version}-"))
    for sub in ("root", "state", "pods", "cni-bin", "cni-conf"):
        (d.dir / sub).mkdir()
    d.etc = tmp_path / "etc"
    d.etc.mkdir()
    yield d
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(d.log_tail(60))
    d.stop()


def _flox_pod_says_hello(cri) -> None:
    pod = cri.run_pod("installed", {"flox.dev/environment": "acme/plain"})
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=["hello"])
    cri.start(cid)
    assert cri.wait_exit(cid) == 0
    assert cri.logs(cid, contains="hello from floxk") == "hello from floxk\n"
    cri.remove_pod(pod)
    cri.assert_node_clean()


def _write(files: dict[Path, str]) -> None:
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("shape", ["default", "imports"])
def test_install_runs_a_flox_pod_then_uninstall_restores(
    daemon, flox_node, cri_images, runc_line, shape
):
    line, d, etc, bin_dir = daemon.line, daemon.dir, daemon.etc, flox_node["bin"]
    default = nodeconf.default_config(line.containerd, etc)
    pause, restrict = cri_images["pause"].ref, ctrd.needs_restrict_oom_score_adj()
    if shape == "default":
        files = {
            daemon.config_path: nodeconf.node_config(line.version, default, d, pause, restrict)
        }
    else:
        files = nodeconf.node_config_with_imports(line.version, default, d, pause, restrict, etc)
    _write(files)
    zipapps = {p.name: p.read_bytes() for p in bin_dir.iterdir()}

    kw = {"config": daemon.config_path, "containerd": str(line.containerd), "bin_dir": str(bin_dir)}
    runc = str(runc_line.path)  # the pair's runc (PATH would give Debian's)
    result = install(**kw, runc=runc)
    assert result.verified
    # 2.x: a drop-in wherever the config imports a glob (the 2.2+ default does); 1.x: append
    dropin = line.major >= 2 and (shape == "imports" or ctrd.imports_dropins(line.version))
    assert result.mode == ("dropin" if dropin else "append")
    flox = runtimes(tomllib.loads(nodeconf.dump(line.containerd, daemon.config_path)))["flox"]
    assert flox["options"]["BinaryName"] == f"{bin_dir}/floxk-runc-front"
    assert flox["options"]["Root"] == str(d / "runc-state")  # runc's, not the host's /run
    installed = {p: p.read_bytes() for p in etc.rglob("*.toml")}

    daemon.start()
    _flox_pod_says_hello(daemon.cri)
    daemon.stop()

    assert not install(**kw, runc=runc).changed
    assert {p: p.read_bytes() for p in etc.rglob("*.toml")} == installed
    uninstall(**kw)
    assert {p: p.read_text() for p in etc.rglob("*") if p.is_file()} == files
    assert {p.name: p.read_bytes() for p in bin_dir.iterdir()} == zipapps


def test_install_restart_restarts_a_plain_containerd(daemon, flox_node, cri_images, runc_line):
    """--restart on a containerd run as a plain process (no systemd here): same argv, env, log."""
    line, d, bin_dir = daemon.line, daemon.dir, flox_node["bin"]
    text = nodeconf.node_config(
        line.version, nodeconf.default_config(line.containerd, daemon.etc), d,
        cri_images["pause"].ref, ctrd.needs_restrict_oom_score_adj(),
    )  # fmt: skip
    daemon.config_path.write_text(text)
    daemon.start()
    old = daemon.proc.pid
    kw = {"config": daemon.config_path, "containerd": str(line.containerd), "bin_dir": str(bin_dir)}
    try:
        result = install(**kw, runc=str(runc_line.path), restart=True)
    finally:
        daemon.proc.poll()  # reap the old process if it is gone
    assert result.restarted["how"] == "process" and result.restarted["old_pid"] == old
    daemon.proc = _Adopted(result.restarted["pid"])
    daemon.wait_ready()
    _flox_pod_says_hello(daemon.cri)
    daemon.stop()
    uninstall(**kw)
    assert daemon.config_path.read_text() == text
