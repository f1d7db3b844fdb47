"""Private environments through containerd's CRI on the line under test: pods on the flox
handler, the generated fronts, real Nix, and a real nginx enforcing a token
(tests/privatehub.py). A pod's token is a Secret volume (laid out as kubelet writes one,
under this pod's uid) mounted at /var/run/secrets/flox.dev, as CRI gives it to containerd.

The same cases through floxk-runc alone are in tests/shim/test_private_create.py, at the
node's gate in tests/env/test_private_hub.py.
"""

from __future__ import annotations

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from shim.core.auth import SECRET_DIR
from testkit.images import STUB_IMAGE
from tests import privatehub
from tests.cri.conftest import checked_cri

pytestmark = [pytest.mark.cri, pytest.mark.root, pytest.mark.nix]


@pytest.fixture(scope="module")
def node(start_flox_node, tmp_path_factory):
    work = tmp_path_factory.mktemp("private-node")
    with privatehub.served_hub(work) as (published, server):
        yield from _node(work, published, server, start_flox_node)


def _node(work, published, server, start_flox_node):
    state = work / "state"
    daemon = start_flox_node(
        work,
        hubs=[server.url],
        trusted_public_keys=[published.key],
        credentials=[{"url": server.url, "auth": "pod-token"}],
    )
    try:
        yield {"daemon": daemon, "cri": daemon.cri, "state": state, "work": work, "server": server}
    finally:
        daemon.stop()


@pytest.fixture
def cri(request, node):
    yield from checked_cri(request, node)


def start_pod(cri, node, token: str | None, *, mount: bool = True, name: str = "private"):
    """A pod on the flox handler whose app container mounts a Secret holding `token` at
    Flox's path (without `mount`: no such volume); (pod id, container id)."""
    pod = cri.run_pod(name, {"flox.dev/environment": "acme/private"})
    uid = cri._pods[pod].metadata.uid
    mounts = []
    if mount:
        volume = privatehub.secret_volume(node["work"] / "volumes" / uid, uid, token)
        mounts.append(pb.Mount(container_path=SECRET_DIR, host_path=str(volume), readonly=True))
    command = ["sh", "-c", 'echo "who=$WHO"']
    return pod, cri.create_container(pod, "app", STUB_IMAGE, command=command, mounts=mounts)


def runs(cri, node, token) -> str:
    pod, cid = start_pod(cri, node, token)
    cri.start(cid)
    assert cri.wait_exit(cid) == 0, cri.logs(cid)
    out = cri.logs(cid, contains="\n")
    cri.remove_pod(pod)
    return out


def refused(cri, node, token, **kw) -> str:
    pod, cid = start_pod(cri, node, token, **kw)
    with pytest.raises(grpc.RpcError) as e:
        cri.start(cid)
    assert cri.status(cid).state != pb.CONTAINER_RUNNING
    cri.remove_pod(pod)
    details = e.value.details()
    assert "floxk: " in details, details
    assert privatehub.TOKEN not in details and privatehub.WRONG not in details
    return details


def _trees(node) -> list[str]:
    envs = node["state"] / "envs"
    return sorted(p.name for p in envs.iterdir()) if envs.exists() else []


def test_missing_or_wrong_token_fails_with_a_clear_event(cri, node):
    assert "this pod has none (HTTP 401)" in refused(cri, node, None, mount=False)
    assert "refused this pod's floxhub-token" in refused(cri, node, privatehub.WRONG)
    assert _trees(node) == []  # nothing realized, by the create nor the sandbox's prefetch


def test_right_token_runs_then_a_tokenless_pod_on_the_warm_node_fails(cri, node):
    assert runs(cri, node, privatehub.TOKEN) == "who=private\n"
    assert len(_trees(node)) == 1
    assert "this pod has none (HTTP 401)" in refused(cri, node, None, mount=False)
    assert "refused this pod's floxhub-token" in refused(cri, node, privatehub.WRONG)
    assert runs(cri, node, privatehub.TOKEN) == "who=private\n"  # the right one still runs


def test_the_token_is_in_no_log_state_or_event(cri, node):
    assert runs(cri, node, privatehub.TOKEN) == "who=private\n"
    refused(cri, node, privatehub.WRONG)
    daemon, server = node["daemon"], node["server"]
    for token in (privatehub.TOKEN, privatehub.WRONG):
        privatehub.assert_token_nowhere(
            token, node["state"], daemon.log_path, daemon.pod_logs, *server.logs()
        )
    log = (node["state"] / "floxk.log").read_text()
    if not daemon.line.version.startswith("1.6."):  # 1.6's CRI never execs the wrapper
        assert "prefetch acme/private: started" in log, log[-2000:]
    # The sandbox's prefetch has no pod token: it leaves the private hub to the create.
    assert "prefetch acme/private: ready" not in log, log[-2000:]
    if "prefetch acme/private: started" in log:
        assert "prefetch acme/private: left to the containers' create" in log, log[-2000:]
