"""Flox pods through CRI on the line under test: the product path, no recorders.

containerd runs the flox handler with the generated fronts (shim.front): the
containerd-shim-flox-v2 front in front of the line's containerd-shim-runc-v2 (prefetch
from this checkout's shim.wrapper) and the floxk-runc front in front of the host's runc. The node's node.toml points
at a signed file:// hub holding acme/hello (hook + vars), acme/plain and acme/broken (a
store path missing from the cache), with a chroot store and state dir of its own.
"""

from __future__ import annotations

import time

import grpc
import pytest

from testkit.images import PLAIN_IMAGE, STUB_IMAGE
from testkit.oci import publish_test_hub
from tests.cri.conftest import checked_cri

pytestmark = [pytest.mark.cri, pytest.mark.root, pytest.mark.nix]


@pytest.fixture(scope="module")
def node(start_flox_node, tmp_path_factory):
    work = tmp_path_factory.mktemp("flox-node")
    hub = publish_test_hub(work / "hub")
    state = work / "state"
    daemon = start_flox_node(work, hubs=[hub.url], trusted_public_keys=[hub.key])
    yield {"daemon": daemon, "cri": daemon.cri, "state": state, "hub": hub}
    daemon.stop()


@pytest.fixture
def cri(request, node):
    yield from checked_cri(request, node, no_uses_left=True)


def run(cri, ref, command, *, name="app", image=STUB_IMAGE, pod_annotations=None):
    annotations = {"flox.dev/environment": ref} if ref else {}
    pod = cri.run_pod(name, {**annotations, **(pod_annotations or {})})
    cid = cri.create_container(pod, name, image, command=command)
    cri.start(cid)
    return pod, cid


def test_env_command_prints_on_the_empty_stub_image(cri):
    pod, cid = run(cri, "acme/plain", ["hello"])
    assert cri.wait_exit(cid) == 0
    assert cri.logs(cid, contains="hello from floxk") == "hello from floxk\n"
    cri.remove_pod(pod)


def test_vars_visible_and_hook_runs_before_the_command(cri):
    pod, cid = run(cri, "acme/hello", ["sh", "-c", 'echo "$COLOR $HOOKED $FLOX_ENV"'])
    assert cri.wait_exit(cid) == 0
    out = cri.logs(cid, "stdout", contains="blue")
    assert out == "hook-ran\nblue yes /run/floxk/env\n"
    cri.remove_pod(pod)


def test_pid1_is_the_command_without_hook(cri):
    pod, cid = run(cri, "acme/plain", ["sh", "-c", "echo pid=$$ $(tr '\\0' ' ' </proc/1/cmdline)"])
    assert cri.wait_exit(cid) == 0
    assert cri.logs(cid, contains="pid=1 sh -c").startswith("pid=1 sh -c echo")
    cri.remove_pod(pod)


def test_write_under_nix_store_fails(cri):
    pod, cid = run(cri, "acme/plain", ["sh", "-c", "touch /nix/store/x || exit 9"])
    assert cri.wait_exit(cid) == 9
    assert "Read-only file system" in cri.logs(cid, "stderr", contains="Read-only")
    cri.remove_pod(pod)


def test_skip_listed_sidecar_is_unmodified(cri):
    pod = cri.run_pod(
        "skip", {"flox.dev/environment": "acme/plain", "flox.dev/skip-containers": "sidecar"}
    )
    side = cri.create_container(
        pod, "sidecar", PLAIN_IMAGE,
        command=["/bin/sh", "-c", 'echo "env=${FLOX_ENV:-none}"; ls /nix/store >/dev/null 2>&1 || echo no-store'],
    )  # fmt: skip
    app = cri.create_container(pod, "app", STUB_IMAGE, command=["hello"])
    cri.start(side)
    cri.start(app)
    assert cri.wait_exit(side) == 0 and cri.wait_exit(app) == 0
    assert cri.logs(side, contains="no-store") == "env=none\nno-store\n"
    assert cri.logs(app, contains="hello") == "hello from floxk\n"
    cri.remove_pod(pod)


@pytest.mark.parametrize("skip_exec", [False, True])
def test_exec_sync_sees_the_env_unless_skip_listed(cri, skip_exec):
    extra = {"flox.dev/skip-containers-exec": "app"} if skip_exec else {}
    pod, cid = run(cri, "acme/hello", ["sleep", "3600"], pod_annotations=extra)
    rc, out, err = cri.exec_sync(
        cid, ["/run/floxk/env/bin/sh", "-c", 'echo "${FLOX_ENV:-none} ${COLOR:-none}"']
    )
    assert rc == 0, err
    assert out == ("none none\n" if skip_exec else "/run/floxk/env blue\n")
    cri.remove_pod(pod)


def test_pod_without_annotation_on_flox_handler_is_plain_runc(cri):
    pod, cid = run(
        cri, None, ["/bin/sh", "-c", 'echo "plain ${FLOX_ENV:-none}"'], image=PLAIN_IMAGE
    )
    assert cri.wait_exit(cid) == 0
    assert cri.logs(cid, contains="plain") == "plain none\n"
    cri.remove_pod(pod)


@pytest.mark.parametrize(
    ("annotations", "reason"),
    [
        ({"flox.dev/environment": "acme/absent"}, "acme/absent"),
        ({"flox.dev/environment": "../../etc/passwd"}, "flox.dev/environment"),
        (
            {"flox.dev/environment": "acme/plain", "flox.dev/skip-containers": "/host/path"},
            "flox.dev/skip-containers",
        ),
        ({"flox.dev/environment": "acme/broken"}, "-web-1.0"),
    ],
)
def test_failures_reach_the_cri_error_and_leave_the_node_clean(cri, node, annotations, reason):
    pod = cri.run_pod("fail", annotations)
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=["hello"])
    with pytest.raises(grpc.RpcError) as e:
        cri.start(cid)
    assert "floxk: " in e.value.details() and reason in e.value.details(), e.value.details()
    cri.remove_pod(pod)
    # (the cri fixture asserts the node is clean and no use is left)


def test_two_pods_one_env_realize_once(cri, node):
    digest = node["hub"].digests["plain"]
    pods = [run(cri, "acme/plain", ["hello"], name=f"twin{i}") for i in range(2)]
    for _, cid in pods:
        assert cri.wait_exit(cid) == 0
    log = (node["state"] / "realize.log").read_text().splitlines()
    trees = [line for line in log if " tree " in f" {line} " and digest in line]
    assert len(trees) == 1, log
    for pod, _ in pods:
        cri.remove_pod(pod)


def test_sandbox_start_prefetches_through_the_shim_front(cri, node, containerd_line):
    if containerd_line.version.startswith("1.6."):
        pytest.skip("containerd 1.6's CRI never execs runtime_path (see shim/core/containerd.py)")
    pod, cid = run(cri, "acme/plain", ["hello"])
    assert cri.wait_exit(cid) == 0
    log = node["state"] / "floxk.log"
    for _ in range(400):
        if log.exists() and "prefetch acme/plain: ready" in log.read_text():
            break
        time.sleep(0.05)
    assert "prefetch acme/plain: ready" in log.read_text()
    cri.remove_pod(pod)
