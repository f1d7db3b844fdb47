"""kube.watching, floxk's one wait primitive, and the waiters built on it, against a real
API server (kube-apiserver + etcd + kube-controller-manager as plain processes: the
fixture of test_apply_apiserver.py). No nodes: pods stay Pending, which is what the
timeouts here need. Skipped, with the reason, where those binaries have not been built."""

from __future__ import annotations

import threading
import time

import pytest

from floxk._cluster import kube
from floxk._cluster import pod as pods
from tests.cli.test_apply_apiserver import apiserver  # noqa: F401 - the fixture

NS = "default"
pytestmark = pytest.mark.filterwarnings("ignore:Unverified HTTPS request")


@pytest.fixture(scope="module")
def core(apiserver):  # noqa: F811
    from kubernetes import client

    return client.CoreV1Api(kube.api_client("admin", config_file=apiserver.kubeconfig))


def _configmap(name: str, value: str = "1") -> dict:
    return {"metadata": {"name": name}, "data": {"v": value}}


def _later(seconds: float, action) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    t.start()
    return t


def test_first_list_then_every_change_as_it_happens(core):
    core.create_namespaced_config_map(NS, _configmap("w-before"))
    seen: list[tuple[float, set[str]]] = []
    t0 = time.monotonic()
    _later(1, lambda: core.create_namespaced_config_map(NS, _configmap("w-after")))
    for objects in kube.watching(core.list_namespaced_config_map, NS, timeout=30):
        seen.append((time.monotonic() - t0, {n for n in objects if n.startswith("w-")}))
        if "w-after" in objects:
            break
    assert seen[0][1] == {"w-before"}, "the first snapshot is the list as it stands"
    assert seen[-1][1] == {"w-before", "w-after"}
    assert seen[-1][0] < 10, f"the change took {seen[-1][0]:.1f} s to arrive: not watched"


def test_a_deleted_object_leaves_the_snapshot(core):
    core.create_namespaced_config_map(NS, _configmap("w-doomed"))
    _later(1, lambda: core.delete_namespaced_config_map("w-doomed", NS))
    gone = False
    for objects in kube.watching(
        core.list_namespaced_config_map, NS, field_selector="metadata.name=w-doomed", timeout=30
    ):
        if "w-doomed" not in objects:
            gone = True
            break
    assert gone


def test_the_deadline_ends_it_after_one_snapshot_at_least(core):
    t0 = time.monotonic()
    snapshots = list(kube.watching(core.list_namespaced_config_map, NS, timeout=0))
    assert len(snapshots) == 1 and time.monotonic() - t0 < 5
    t0 = time.monotonic()
    list(kube.watching(core.list_namespaced_config_map, NS, timeout=3))
    assert 2.5 < time.monotonic() - t0 < 8


def test_resync_yields_without_changes(core):
    snapshots = list(
        kube.watching(
            core.list_namespaced_config_map,
            NS,
            field_selector="metadata.name=w-nothing",
            timeout=5,
            resync=1,
        )
    )
    assert len(snapshots) >= 4, "resync=1 over 5 s: a snapshot about every second"


def test_follow_times_out_on_a_pod_without_nodes_and_sees_a_deletion(core, apiserver):  # noqa: F811
    api = kube.api_client("admin", config_file=apiserver.kubeconfig)
    body = {"metadata": {"name": "w-pod"}, "spec": {"containers": [{"name": "a", "image": "x"}]}}
    core.create_namespaced_pod(NS, body)
    changes: list[str] = []
    with pytest.raises(kube.WaitTimeout) as e:
        pods.follow(api, "w-pod", NS, timeout=2, on_change=lambda s: changes.append(s.summary))
    assert "pod default/w-pod not done after 2 s (Pending)" in e.value.message
    assert e.value.exit_code == 5 and changes == ["Pending"]
    _later(1, lambda: core.delete_namespaced_pod("w-pod", NS, grace_period_seconds=0))
    with pytest.raises(pods.FloxkError) as e:
        pods.follow(api, "w-pod", NS, timeout=30)
    assert "was deleted while it was followed" in e.value.message


def test_wait_schedulable_without_nodes_names_what_is_missing(apiserver):  # noqa: F811
    api = kube.api_client("admin", config_file=apiserver.kubeconfig)
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(kube.WaitTimeout) as e:
        kube.wait_schedulable(api, timeout=3, progress=said.append)
    assert time.monotonic() - t0 < 10
    assert "cluster not ready for flox pods after 3 s" in e.value.message
    assert "nodes not Ready: none registered" in e.value.message
    assert said and said[0].startswith("waiting: nodes not Ready: none registered")


def test_stopping_the_streams_ends_every_watch_thread(core, apiserver):  # noqa: F811
    """Each watch is blocked reading a quiet stream (the server would hold it 30 s): stop()
    shuts those sockets and joins, so no thread outlives it. One left running at exit is
    how `floxk apply` died by SIGABRT after printing its result in CI."""
    from floxk._cluster.apply import Streams

    core.create_namespaced_config_map(NS, _configmap("w-quiet"))
    streams = Streams()
    for _ in range(3):
        streams.add(
            ("ConfigMap", NS),
            core.list_namespaced_config_map,
            NS,
            field_selector="metadata.name=w-quiet",
        )
    for _ in range(3):  # each stream's first ADDED: all three are now blocked in a read
        key, type_, obj = streams.events.get(timeout=30)
        assert type_ == "ADDED" and obj.metadata.name == "w-quiet"
    assert len(streams.alive()) == 3
    streams.stop()
    assert streams.alive() == [], "a watch thread outlived stop()"
    assert streams.events.empty(), "a stopped stream queued a failure"


def test_follow_leaves_no_watch_thread_behind(core, apiserver):  # noqa: F811
    from floxk._cluster import apply as applying

    api = kube.api_client("admin", config_file=apiserver.kubeconfig)
    core.create_namespaced_config_map(NS, _configmap("w-follow"))
    body = {"metadata": {"name": "w-pod2"}, "spec": {"containers": [{"name": "a", "image": "x"}]}}
    core.create_namespaced_pod(NS, body)
    with pytest.raises(kube.WaitTimeout):
        applying.follow(api, [("Pod", NS, "w-pod2")], timeout=2)
    left = [t.name for t in threading.enumerate() if t.name.startswith("floxk-watch")]
    assert left == [], left


def test_dev_log_tail_stop_leaves_no_thread_reading(apiserver):  # noqa: F811
    """`floxk dev`'s log tail (a pod watch and its pump) ends every thread on stop(), so
    Ctrl-C exits without one still in a read. (Its per-container log follows need a node
    that runs pods: tests/k8s/test_dev.py stops them with Ctrl-C and expects exit 0.)"""
    from floxk import _dev
    from floxk._cluster.apply import Planned
    from floxk._cluster.pod import Document

    api = kube.api_client("admin", config_file=apiserver.kubeconfig)
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w-tail", "namespace": NS}}
    tail = _dev._LogTail(api, emit=lambda event: None)
    doc = Document(body, "pods.yaml", 1)
    tail.select([Planned(doc=doc, body=body, namespaced=True, flox=False)])
    ours = ("floxk-watch", "floxk-dev")
    deadline = time.monotonic() + 30
    while len([t for t in threading.enumerate() if t.name.startswith(ours)]) < 2:
        assert time.monotonic() < deadline, "the pod watch never started"
        time.sleep(0.1)
    tail.stop()
    left = [t.name for t in threading.enumerate() if t.name.startswith(ours)]
    assert left == [], left
