"""Drive a real containerd through CRI, the way kubelet does, on a private socket.

Two objects:
- `Containerd`: one daemon of one containerd line with a full config written under a private
  temp dir (root, state, grpc socket, pod logs), CRI on, overlayfs snapshotter, runtimes
  `runc` (plain, the runc under test: testkit/lines.py) and `flox` (shim/core/containerd.py's table), the suite's images
  imported. `start()` waits until CRI answers; `stop()` removes what is left, stops the
  daemon, kills stray shims, unmounts leftovers and deletes the temp dir.
- `CRI`: a small client over the CRI v1 gRPC API (PyPI container-runtime-interface-api,
  module `cri_api.v1`). Pods use the node's network namespace, so no CNI is needed.

The pytest fixtures that hand these out are in tests/cri/conftest.py; benchmarks/crinode.py
builds its node on the same objects; docs/testing.md
describes the API for test authors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1.api_pb2_grpc import ImageServiceStub, RuntimeServiceStub

from shim.core import containerd as ctrd
from testkit.images import Image
from testkit.layout import Below
from testkit.lines import Line, installed_lines, runc_under_test

__all__ = ["CRI", "Containerd", "Line", "installed_lines"]

NAMESPACE = "k8s.io"


def installed_script(name: str) -> str | None:
    """A console script of this Python's installation (pip puts them in the scripts dir),
    else the one on PATH. The scripts dir comes first: a PATH entry may be a version-manager
    shim (e.g. pyenv's) that adds a bash start to every call."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def default_flox_paths() -> tuple[str, str]:
    """(shim, interposer) for the flox runtime: env overrides, else the installed console scripts.

    FLOXK_CRI_FLOX_SHIM / FLOXK_CRI_FLOX_RUNC name other binaries (e.g. a test build).
    When one is not installed, a placeholder path keeps the config valid; pods on the flox
    handler then fail with containerd's own error.
    """
    shim = os.environ.get("FLOXK_CRI_FLOX_SHIM") or installed_script("containerd-shim-flox-v2")
    runc = os.environ.get("FLOXK_CRI_FLOX_RUNC") or installed_script("floxk-runc")
    return (
        shim or "/nonexistent/containerd-shim-flox-v2",
        runc or "/nonexistent/floxk-runc",
    )


@dataclass
class Containerd:
    """A containerd daemon of `line` on a private socket. Build with `start_containerd`."""

    line: Line
    images: dict[str, Image]
    flox_shim: str
    flox_runc: str
    env: dict[str, str] = field(default_factory=dict)  # extra env for containerd and its shims
    extra_config: dict[str, Any] = field(default_factory=dict)  # deep-merged over the config
    restrict_oom_score_adj: bool | None = None  # None: ask the host
    # The real runc both runtimes end in (FLOXK_CRI_RUNC, else Debian's): testkit/lines.py.
    runc: str = field(default_factory=lambda: str(runc_under_test().path))

    dir: Path = field(init=False)
    proc: subprocess.Popen | None = field(init=False, default=None)
    cri: CRI = field(init=False)

    # --- layout -------------------------------------------------------------------------
    socket = Below("dir", "containerd.sock")
    root = Below("dir", "root")
    state = Below("dir", "state")
    pod_logs = Below("dir", "pods")
    config_path = Below("dir", "config.toml")
    log_path = Below("dir", "containerd.log")

    # --- config -------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The full config.toml for this line, as a dict."""
        version = self.line.version
        restrict = self.restrict_oom_score_adj
        if restrict is None:
            restrict = ctrd.needs_restrict_oom_score_adj()
        runc_root = str(self.state / "runc")  # runc state here, not in the host's /run
        runtimes = {
            "runc": {
                "runtime_type": ctrd.RUNC_V2,
                "options": {"BinaryName": self.runc, "SystemdCgroup": False, "Root": runc_root},
            },
            ctrd.FLOX_RUNTIME: ctrd.merge(
                ctrd.flox_runtime_table(shim_path=self.flox_shim, runc_path=self.flox_runc),
                {"options": {"Root": runc_root}},
            ),
        }
        base = ctrd.cri_runtime_config(version, runtimes=runtimes, restrict_oom_score_adj=restrict)
        cri_plugin = ctrd.runtime_plugin_id(version)
        cni = {"bin_dir": str(self.dir / "cni-bin"), "conf_dir": str(self.dir / "cni-conf")}
        pause = self.images["pause"].ref
        common: dict[str, Any] = {
            "root": str(self.root),
            "state": str(self.state),
            "grpc": {"address": str(self.socket)},
            "debug": {"level": "info"},
            "plugins": {
                "io.containerd.internal.v1.opt": {"path": str(self.dir / "opt")},
                "io.containerd.nri.v1.nri": {"disable": True},  # its socket is host-global
            },
        }
        if ctrd.config_version(version) == 2:
            lines: dict[str, Any] = {
                "plugins": {
                    cri_plugin: {
                        "sandbox_image": pause,
                        "disable_apparmor": True,
                        "cni": cni,
                        "containerd": {
                            "snapshotter": "overlayfs",
                            "default_runtime_name": "runc",
                        },
                    }
                }
            }
        else:
            lines = {
                "plugins": {
                    "io.containerd.cri.v1.images": {
                        "snapshotter": "overlayfs",
                        "pinned_images": {"sandbox": pause},
                    },
                    cri_plugin: {
                        "disable_apparmor": True,
                        "cni": {"bin_dirs": [cni["bin_dir"]], "conf_dir": cni["conf_dir"]},
                        "containerd": {"default_runtime_name": "runc"},
                    },
                }
            }
        config = ctrd.merge(ctrd.merge(ctrd.merge(base, common), lines), self.extra_config)
        return config

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> Containerd:
        self.dir = Path(tempfile.mkdtemp(prefix=f"floxk-cri-{self.line.version}-"))
        for d in (
            self.root,
            self.state,
            self.pod_logs,
            self.dir / "cni-bin",
            self.dir / "cni-conf",
        ):
            d.mkdir(parents=True)
        self.config_path.write_text(ctrd.to_toml(self.config()))
        env = {
            **os.environ,
            # containerd finds containerd-shim-runc-v2 on PATH: the line's own first.
            "PATH": f"{self.line.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            **self.env,
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(self.line.containerd), "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.cri = CRI(self.socket, self.pod_logs, containerd=self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"containerd {self.line.version} exited with {self.proc.returncode}:\n"
                    + self.log_tail()
                )
            if self.socket.exists() and self.cri.ready():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"containerd did not answer CRI in {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        for image in self.images.values():
            self.ctr("images", "import", "--snapshotter", "overlayfs", str(image.archive))
        return self

    def ctr(self, *args: str) -> str:
        """Run `ctr -n k8s.io -a <socket> ARGS`; return stdout (raise with output on failure)."""
        proc = subprocess.run(
            [str(self.line.ctr), "-n", NAMESPACE, "-a", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no containerd log)"

    def shim_pids(self) -> list[int]:
        """Shim processes started for this daemon (their argv names our socket)."""
        needle = str(self.socket).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == (self.proc.pid if self.proc else -1):
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in argv:
                pids.append(int(entry.name))
        return pids

    def mounts(self) -> list[str]:
        """Mount points under this daemon's directory (deepest first)."""
        prefix = str(self.dir) + "/"
        points = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    points.append(point)
        return sorted(points, key=len, reverse=True)

    def stop(self) -> None:
        """Remove leftover pods, stop the daemon and its shims, unmount, delete the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.cri.remove_all()
            except Exception:  # noqa: BLE001 - best effort: the daemon may be wedged
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "cri", None) is not None:
            self.cri.close()
        for pid in self.shim_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for point in self.mounts():
            subprocess.run(["umount", "-l", point], capture_output=True)
        if getattr(self, "dir", None) is not None and self.dir.exists():
            if os.environ.get("FLOXK_CRI_KEEP"):  # debugging: keep config, logs, pod logs
                print(f"FLOXK_CRI_KEEP: containerd files kept in {self.dir}", file=sys.stderr)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)


class CRI:
    """CRI v1 client for one daemon. IDs are containerd's (64 hex characters)."""

    def __init__(self, socket: Path, log_root: Path, *, containerd: Containerd | None = None):
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime = RuntimeServiceStub(self.channel)
        self.images = ImageServiceStub(self.channel)
        self.log_root = log_root
        self.containerd = containerd
        self._pods: dict[str, pb.PodSandboxConfig] = {}
        self._log_paths: dict[str, Path] = {}

    def close(self) -> None:
        self.channel.close()

    def ready(self) -> bool:
        try:
            self.runtime.Version(pb.VersionRequest(), timeout=2)
            return True
        except grpc.RpcError:
            return False

    def version(self) -> pb.VersionResponse:
        return self.runtime.Version(pb.VersionRequest(), timeout=10)

    # --- pods ------------------------------------------------------------------------------
    @staticmethod
    def namespaces() -> pb.NamespaceOption:
        """As kubelet sets them for a hostNetwork pod: node network, own PID ns per container."""
        return pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)

    def run_pod(
        self,
        name: str,
        annotations: dict[str, str] | None = None,
        runtime_handler: str = "flox",
        *,
        namespace: str = "default",
        labels: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> str:
        """RunPodSandbox in the node's network namespace; "" is the default (plain runc)."""
        uid = uuid.uuid4().hex
        log_dir = self.log_root / f"{namespace}_{name}_{uid}"
        log_dir.mkdir(parents=True)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            log_directory=str(log_dir),
            labels=labels or {},
            annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=self.namespaces())
            ),
        )
        resp = self.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler),
            timeout=timeout,
        )
        self._pods[resp.pod_sandbox_id] = config
        return resp.pod_sandbox_id

    def pod_status(self, pod_id: str) -> pb.PodSandboxStatus:
        return self.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=30
        ).status

    def stop_pod(self, pod_id: str) -> None:
        self.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)

    def remove_pod(self, pod_id: str) -> None:
        """Stop (CRI requires it) and remove the pod and its containers."""
        self.stop_pod(pod_id)
        self.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120
        )
        self._pods.pop(pod_id, None)

    def pods(self) -> list[pb.PodSandbox]:
        return list(self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items)

    # --- containers ------------------------------------------------------------------------
    def create_container(
        self,
        pod_id: str,
        name: str,
        image: str,
        command: list[str] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        *,
        mounts: list[pb.Mount] | None = None,
        working_dir: str = "",
        labels: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> str:
        """CreateContainer in pod `pod_id` (a pod from run_pod on this client); logs to <name>.log."""
        pod_config = self._pods[pod_id]
        log_path = f"{name}.log"
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=command or [],
            args=args or [],
            working_dir=working_dir,
            envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
            labels=labels or {},
            annotations=annotations or {},
            mounts=mounts or [],
            log_path=log_path,
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=self.namespaces()
                )
            ),
        )
        resp = self.runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config
            ),
            timeout=timeout,
        )
        self._log_paths[resp.container_id] = Path(pod_config.log_directory) / log_path
        return resp.container_id

    def start(self, container_id: str, timeout: float = 120) -> None:
        self.runtime.StartContainer(
            pb.StartContainerRequest(container_id=container_id), timeout=timeout
        )

    def stop(self, container_id: str, grace: int = 10) -> None:
        self.runtime.StopContainer(
            pb.StopContainerRequest(container_id=container_id, timeout=grace), timeout=grace + 60
        )

    def remove(self, container_id: str) -> None:
        self.runtime.RemoveContainer(
            pb.RemoveContainerRequest(container_id=container_id), timeout=60
        )

    def status(self, container_id: str) -> pb.ContainerStatus:
        return self.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=container_id), timeout=30
        ).status

    def containers(self) -> list[pb.Container]:
        return list(self.runtime.ListContainers(pb.ListContainersRequest(), timeout=30).containers)

    def wait_exit(self, container_id: str, timeout: float = 60) -> int:
        """Wait until the container has exited; return its exit code."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(container_id)
            if status.state == pb.CONTAINER_EXITED:
                return status.exit_code
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"container {container_id[:12]} still {pb.ContainerState.Name(status.state)}"
                    f" after {timeout}s"
                )
            time.sleep(0.1)

    def exec_sync(
        self, container_id: str, cmd: list[str], timeout: int = 30
    ) -> tuple[int, str, str]:
        """ExecSync: (exit code, stdout, stderr)."""
        resp = self.runtime.ExecSync(
            pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
            timeout=timeout + 30,
        )
        return (
            resp.exit_code,
            resp.stdout.decode(errors="replace"),
            resp.stderr.decode(errors="replace"),
        )

    # --- images ----------------------------------------------------------------------------
    def pull_image(self, ref: str, timeout: float = 600) -> str:
        """PullImage as kubelet asks for it (no credentials); returns the image's id. A
        registry on localhost is pulled over plain HTTP, as containerd does for localhost."""
        return self.images.PullImage(
            pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=timeout
        ).image_ref

    def remove_image(self, ref: str) -> None:
        """RemoveImage (CRI deletes synchronously: the image's content and snapshots that
        nothing else uses are gone when it returns)."""
        self.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)

    def image_present(self, ref: str) -> bool:
        resp = self.images.ImageStatus(
            pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)), timeout=30
        )
        return bool(resp.image.id)

    # --- logs --------------------------------------------------------------------------------
    def log_path(self, container_id: str) -> Path:
        """The file CRI writes the container's output to (pod log_directory / <name>.log)."""
        return self._log_paths[container_id]

    def log_entries(self, container_id: str) -> list[tuple[str, str]]:
        """(stream, text) per line of the CRI log file; partial ("P") chunks are joined."""
        entries: list[tuple[str, str]] = []
        pending: dict[str, str] = {}
        path = self.log_path(container_id)
        if not path.exists():
            return entries
        for raw in path.read_text(errors="replace").splitlines():
            # <RFC3339 time> <stdout|stderr> <F|P> <text>
            parts = raw.split(" ", 3)
            if len(parts) < 3:
                continue
            _, stream, tag = parts[:3]
            text = parts[3] if len(parts) == 4 else ""
            if tag == "P":
                pending[stream] = pending.get(stream, "") + text
                continue
            entries.append((stream, pending.pop(stream, "") + text))
        return entries

    def logs(
        self,
        container_id: str,
        stream: str | None = None,
        *,
        contains: str | None = None,
        timeout: float = 10,
    ) -> str:
        """The container's output as text (one "\\n"-terminated line per log line).

        stream: "stdout" or "stderr" only. contains: wait up to `timeout` seconds for that text
        (CRI copies output to the file asynchronously, a moment after the process wrote it).
        """
        deadline = time.monotonic() + timeout
        while True:
            text = "".join(
                line + "\n"
                for s, line in self.log_entries(container_id)
                if stream is None or s == stream
            )
            if contains is None or contains in text or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    # --- cleanliness ---------------------------------------------------------------------------
    def remove_all(self) -> None:
        """Remove every pod (and so every container) CRI knows about."""
        for container in self.containers():
            try:
                self.stop(container.id, grace=0)
                self.remove(container.id)
            except grpc.RpcError:
                pass
        for pod in self.pods():
            self.remove_pod(pod.id)

    def leftovers(self) -> list[str]:
        """What is still on the node: CRI pods/containers, containerd tasks/containers, shims, mounts."""
        found = [f"pod {p.metadata.name} ({p.id[:12]})" for p in self.pods()]
        found += [f"container {c.metadata.name} ({c.id[:12]})" for c in self.containers()]
        daemon = self.containerd
        if daemon is not None:
            tasks = daemon.ctr("tasks", "ls", "-q").split()
            found += [f"containerd task {t[:12]}" for t in tasks]
            found += [
                f"containerd container {c[:12]}"
                for c in daemon.ctr("containers", "ls", "-q").split()
            ]
            found += [f"shim process {pid}" for pid in daemon.shim_pids()]
            found += [f"mount {m}" for m in daemon.mounts()]
        return found

    def assert_node_clean(self, timeout: float = 15) -> None:
        """Assert nothing is left: no pods, containers, tasks, shim processes or mounts.

        Shims exit a moment after their last task is deleted, so wait up to `timeout` s.
        """
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, "node not clean: " + "; ".join(left)

    def describe(self) -> str:
        """Debug dump: pods and containers with states, as JSON."""
        return json.dumps(
            {
                "pods": [
                    {
                        "id": p.id[:12],
                        "name": p.metadata.name,
                        "state": pb.PodSandboxState.Name(p.state),
                    }
                    for p in self.pods()
                ],
                "containers": [
                    {
                        "id": c.id[:12],
                        "name": c.metadata.name,
                        "state": pb.ContainerState.Name(c.state),
                    }
                    for c in self.containers()
                ],
            },
            indent=2,
        )
