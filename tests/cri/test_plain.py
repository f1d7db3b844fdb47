"""Plain-runtime smoke tests: the harness itself against the line under test (handler "")."""

from __future__ import annotations

import pytest

from testkit.images import PLAIN_IMAGE, STUB_IMAGE

pytestmark = [pytest.mark.cri, pytest.mark.root]


def test_line_under_test_answers_cri(cri, containerd_line):
    version = cri.version()
    assert version.runtime_name == "containerd"
    assert containerd_line.version in version.runtime_version


def test_images_are_known_to_cri(cri):
    from cri_api.v1 import api_pb2 as pb

    tags = {
        tag
        for image in cri.images.ListImages(pb.ListImagesRequest()).images
        for tag in image.repo_tags
    }
    assert {PLAIN_IMAGE, STUB_IMAGE} <= tags


def test_plain_pod_echo_logs_read_back(cri):
    pod = cri.run_pod("echo", runtime_handler="")
    cid = cri.create_container(
        pod,
        "hello",
        PLAIN_IMAGE,
        command=["/bin/sh", "-c"],
        args=['echo "hello $WHO"; echo oops >&2'],
        env={"WHO": "cri"},
    )
    cri.start(cid)
    assert cri.wait_exit(cid) == 0
    assert cri.logs(cid, "stdout", contains="hello cri") == "hello cri\n"
    assert cri.logs(cid, "stderr", contains="oops") == "oops\n"
    cri.remove_pod(pod)
    cri.assert_node_clean()


def test_plain_pod_exit_code_is_reported(cri):
    pod = cri.run_pod("exit", runtime_handler="")
    cid = cri.create_container(pod, "fail", PLAIN_IMAGE, command=["/bin/sh", "-c", "exit 7"])
    cri.start(cid)
    assert cri.wait_exit(cid) == 7
    cri.remove_pod(pod)


def test_exec_sync_in_running_container(cri):
    pod = cri.run_pod("exec", runtime_handler="")
    cid = cri.create_container(pod, "sleeper", PLAIN_IMAGE, command=["/bin/sleep", "3600"])
    cri.start(cid)
    rc, out, err = cri.exec_sync(cid, ["/bin/sh", "-c", "echo in-$((6*7)); echo e >&2; exit 3"])
    assert (rc, out, err) == (3, "in-42\n", "e\n")
    rc, out, _ = cri.exec_sync(cid, ["/bin/cat", "/proc/1/cmdline"])
    assert rc == 0 and out.split("\0")[:2] == ["/bin/sleep", "3600"]
    cri.remove_pod(pod)
    cri.assert_node_clean()


def test_stop_remove_leaves_node_clean_with_running_containers(cri):
    pod = cri.run_pod("busy", runtime_handler="")
    for name in ("a", "b"):
        cid = cri.create_container(pod, name, PLAIN_IMAGE, command=["/bin/sleep", "3600"])
        cri.start(cid)
    assert len(cri.containers()) == 2
    assert len(cri.leftovers()) > 0  # the cleanliness check sees running work
    cri.remove_pod(pod)
    cri.assert_node_clean()
