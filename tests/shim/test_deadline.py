"""The realization deadline against a real hanging cache, and a real kill of floxk-runc.

The cache is an HTTP port on localhost that accepts connections (the kernel completes the
handshake) and never answers: Nix waits on it, as it would on a stalled cache. Everything
else is real: the front, floxk-runc, Nix, a chroot store, the signed file:// hub.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from shim.core import gc, stats
from shim.front import write_front
from testkit.oci import make_bundle, publish_test_hub, runc_path, write_node_toml

pytestmark = [pytest.mark.nix, pytest.mark.root]

TIMEOUT = 3


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return publish_test_hub(tmp_path_factory.mktemp("hub"))


@pytest.fixture
def hanging_cache():
    """http://127.0.0.1:PORT that accepts and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


class Node:
    def __init__(self, tmp: Path, hub) -> None:
        self.tmp, self.hub = tmp, hub
        self.cfg = tmp / "node.toml"
        self.front = str(write_front(tmp / "bin" / "floxk-runc", os.path.realpath(runc_path())))
        self.env = {**os.environ, "FLOXK_NODE_CONFIG": str(self.cfg)}
        self.state, self.store = tmp / "state", tmp / "store"

    def configure(self, substituters: list[str], timeout: float = TIMEOUT) -> None:
        write_node_toml(
            self.cfg,
            hubs=[self.hub.url],
            substituters=substituters,
            trusted_public_keys=[self.hub.key],
            state_dir=str(self.state),
            store_root=str(self.store),
            realize_timeout=timeout,
        )

    def bundle(self, ref: str = "acme/plain") -> tuple[str, Path]:
        cid = f"app-{uuid.uuid4().hex[:8]}"
        annotations = {
            "flox.dev/environment": ref,
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "app",
        }
        return cid, make_bundle(self.tmp / cid, ["hello"], annotations=annotations)

    def create_argv(self, cid: str, bundle: Path) -> list[str]:
        return [
            self.front, "--root", str(self.tmp / "runc"), "--log", str(bundle / "log.json"),
            "--log-format", "json", "create", "--bundle", str(bundle), cid,
        ]  # fmt: skip

    def create(self, cid: str, bundle: Path) -> tuple[subprocess.CompletedProcess, float]:
        start = time.monotonic()
        with open(bundle / "out", "w") as out, open(bundle / "err", "w") as err:
            r = subprocess.run(
                self.create_argv(cid, bundle), env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, timeout=120,
            )  # fmt: skip
        return r, time.monotonic() - start

    def delete(self, cid: str) -> None:
        subprocess.run(
            [self.front, "--root", str(self.tmp / "runc"), "delete", "--force", cid],
            env=self.env, capture_output=True, timeout=60,
        )  # fmt: skip


def _nix_processes(store: Path) -> list[int]:
    """Live processes working on `store` (their argv names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and os.fsencode(store) in argv and b"nix" in os.path.basename(argv[0]):
            found.append(int(entry.name))
    return found


def _last_error(bundle: Path) -> str:
    lines = (bundle / "log.json").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["level"] == "error"
    return last["msg"]


def _leftovers(node: Node) -> list[str]:
    """Half-built trees, and GC roots of a tree that does not exist."""
    roots = node.store / "nix" / "var" / "nix" / "gcroots" / "floxk"
    found = [str(p) for p in (node.state / "tmp").glob("*")]
    found += [str(p) for p in roots.glob("*") if not (node.state / "envs" / p.name).exists()]
    return sorted(found)


def _wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_hanging_cache_fails_the_create_at_the_deadline_and_the_next_pod_retries(
    tmp_path, hub, hanging_cache
):
    node = Node(tmp_path, hub)
    # A cold node: even the environment's signed record must come from the hanging cache.
    node.configure([hanging_cache])
    cid, bundle = node.bundle()
    before = (bundle / "config.json").read_bytes()
    r, took = node.create(cid, bundle)
    assert r.returncode == 1, (bundle / "err").read_text()
    msg = _last_error(bundle)
    assert "realizing acme/plain did not finish within 3 s" in msg
    assert "realize_timeout" in msg and hanging_cache in msg and "next pod retries" in msg
    assert TIMEOUT <= took < TIMEOUT + 10, took  # not Nix's own 300 s stall timeout
    assert (bundle / "config.json").read_bytes() == before
    assert _nix_processes(node.store) == []
    assert _leftovers(node) == []
    assert not any((node.state / "uses").glob("*/*"))
    (timeout,) = [e for e in stats.events(str(node.state / "floxk.log")) if e["event"] == "timeout"]
    assert timeout["env"] == "acme/plain" and timeout["seconds"] == TIMEOUT

    # The cache answers again: the next pod realizes and starts.
    node.configure([hub.url])
    cid2, bundle2 = node.bundle()
    r, _ = node.create(cid2, bundle2)
    assert r.returncode == 0, (bundle2 / "err").read_text()
    assert "/run/floxk/env" in (bundle2 / "config.json").read_text()
    node.delete(cid2)


def test_deadline_in_the_closure_removes_the_half_done_realization(tmp_path, hub, hanging_cache):
    """The record is known (verified before), the closure is not: the deadline hits while
    Nix fetches the closure, after the realization took its lock."""
    node = Node(tmp_path, hub)
    node.configure([hub.url])
    cid, bundle = node.bundle()
    assert node.create(cid, bundle)[0].returncode == 0
    node.delete(cid)
    freed = gc.collect(state_dir=node.state, store_root=node.store)
    assert len(freed["freed_envs"]) == 1 and freed["store_paths_deleted"]

    node.configure([hanging_cache])
    cid, bundle = node.bundle()
    r, took = node.create(cid, bundle)
    assert r.returncode == 1
    assert "did not finish within 3 s" in _last_error(bundle)
    assert TIMEOUT <= took < TIMEOUT + 10, took
    assert _nix_processes(node.store) == []
    assert _leftovers(node) == []
    assert not (node.state / "envs").exists() or not any((node.state / "envs").iterdir())

    node.configure([hub.url])
    cid, bundle = node.bundle()
    assert node.create(cid, bundle)[0].returncode == 0, (bundle / "err").read_text()
    node.delete(cid)


def test_killed_floxk_runc_takes_its_nix_children_along(tmp_path, hub, hanging_cache):
    """containerd kills `runc create` when its request's context ends (SIGKILL, no chance
    to clean up): the nix-store it started must not keep running."""
    node = Node(tmp_path, hub)
    node.configure([hanging_cache], timeout=600)
    cid, bundle = node.bundle()
    p = subprocess.Popen(
        node.create_argv(cid, bundle), env=node.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        end = time.monotonic() + 60
        children: list[int] = []
        while not children and time.monotonic() < end:
            children = _nix_processes(node.store)
            time.sleep(0.1)
        assert children, "floxk-runc never started Nix"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        assert _wait_gone(children) == [], "Nix outlived the floxk-runc that started it"
    finally:
        if p.poll() is None:
            p.kill()
    # Nothing blocks the next pod: the lock died with the process.
    node.configure([hub.url])
    cid, bundle = node.bundle()
    assert node.create(cid, bundle)[0].returncode == 0, (bundle / "err").read_text()
    node.delete(cid)
