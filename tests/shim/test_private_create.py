"""Private environments through the real floxk-runc create path: the front, the Python
side, real Nix against a real nginx that enforces a token (tests/privatehub.py), a chroot
store and the real runc running what was accepted.

The pod's token comes only from the container's own spec: the mount at
/var/run/secrets/flox.dev, a Secret volume laid out as kubelet writes it. A refused create
fails with the reason in runc's log (what reaches the pod's events) and config.json as
containerd wrote it; the token is in no log, no state file and no event.
"""

from __future__ import annotations

import os
import uuid

import pytest

from testkit.oci import write_node_toml
from tests import privatehub
from tests.shim.test_create_e2e import _ann, assert_refused, create_logged, front_node, run_created

pytestmark = [pytest.mark.nix, pytest.mark.root]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with privatehub.served_hub(tmp_path_factory.mktemp("private-hub")) as served:
        yield served


@pytest.fixture
def node(tmp_path, served):
    published, server = served
    cfg = write_node_toml(
        tmp_path / "node.toml",
        hubs=[server.url],
        trusted_public_keys=[published.key],
        state_dir=str(tmp_path / "state"),
        store_root=str(tmp_path / "store"),
        credentials=[{"url": server.url, "auth": "pod-token"}],
    )
    return front_node(tmp_path, cfg)


def create(node, token: str | None, args, *, mount=True, source=None, name="app"):
    """create through the front for a pod (its own sandbox uid) whose Secret volume at
    Flox's path holds `token`; (cid, bundle, exit code, config.json as written)."""
    uid = uuid.uuid4().hex
    cid = f"{name}-{uid[:8]}"
    annotations = {**_ann("acme/private", name), "io.kubernetes.cri.sandbox-uid": uid}
    mounts = []
    if mount:
        if source is None:
            source = privatehub.secret_volume(node["tmp"] / "volumes" / uid, uid, token)
        mounts.append(privatehub.token_mount(source))
    return cid, *create_logged(node, cid, args, annotations, mounts=mounts)


def run(node, token, args, **kw) -> str:
    return run_created(node, *create(node, token, args, **kw)[:3])


def refused(node, token, **kw) -> str:
    cid, bundle, code, written = create(node, token, ["hello"], **kw)
    msg = assert_refused(node, cid, bundle, code, written)
    for secret in (privatehub.TOKEN, privatehub.WRONG):
        assert secret not in (bundle / "log.json").read_text()
        assert secret not in (bundle / "err").read_text()
    return msg


def _trees(node) -> list[str]:
    envs = node["tmp"] / "state" / "envs"
    return sorted(os.listdir(envs)) if envs.exists() else []


def test_right_token_runs(node):
    assert run(node, privatehub.TOKEN, ["sh", "-c", 'echo "$WHO"']) == "private\n"


def test_missing_or_wrong_token_fails_with_the_reason(node):
    assert "this pod has none (HTTP 401)" in refused(node, None, mount=False)
    assert "refused this pod's floxhub-token" in refused(node, privatehub.WRONG)
    assert "holds no floxhub-token" in refused(node, None)
    assert _trees(node) == []


def test_second_pod_without_the_token_on_a_warm_node(node):
    assert run(node, privatehub.TOKEN, ["hello"]) == "hello from floxk\n"
    assert len(_trees(node)) == 1  # realized: the tree is on the node
    assert "this pod has none (HTTP 401)" in refused(node, None, mount=False)
    assert "refused this pod's floxhub-token" in refused(node, privatehub.WRONG)


def test_a_volume_that_is_not_this_pods_secret(node, tmp_path):
    other = privatehub.secret_volume(tmp_path / "other", uuid.uuid4().hex, privatehub.TOKEN)
    assert "is not a Secret of this pod" in refused(node, None, source=other)
    assert _trees(node) == []


def test_the_token_is_in_no_log_or_state_file(node, served):
    _, server = served
    assert run(node, privatehub.TOKEN, ["hello"]) == "hello from floxk\n"
    refused(node, privatehub.WRONG)
    state = node["tmp"] / "state"
    assert (state / "floxk.log").is_file()  # the node log exists and was written
    privatehub.assert_token_nowhere(privatehub.TOKEN, state, *server.logs())
    privatehub.assert_token_nowhere(privatehub.WRONG, state, *server.logs())
