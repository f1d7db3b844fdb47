"""The trust attacks through containerd's CRI on the line under test: pods on the flox
handler, the generated fronts, real Nix, and a signed file:// hub an attacker without the
key has edited (tests/attacker.publish_attacked_hub). The same cases through floxk-runc
alone are in tests/shim/test_trust_create.py; the Nix-level ones in tests/env/test_trust.py.

A refused pod must fail its container with the reason in the CRI error (the pod's events),
start nothing, and leave nothing usable in the node's state dir.
"""

from __future__ import annotations

import grpc
import pytest
from cri_api.v1 import api_pb2 as pb

from shim.core import nix
from testkit.images import STUB_IMAGE
from testkit.wait import eventually
from tests import attacker
from tests.cri.conftest import checked_cri

pytestmark = [pytest.mark.cri, pytest.mark.root, pytest.mark.nix]


@pytest.fixture(scope="module")
def node(start_flox_node, tmp_path_factory):
    work = tmp_path_factory.mktemp("trust-node")
    hub = attacker.publish_attacked_hub(work / "hub")
    state = work / "state"
    daemon = start_flox_node(
        work,
        hubs=[hub.url],
        trusted_public_keys=[hub.key],
        policy={"allowed_owners": attacker.OWNERS},
    )
    yield {"daemon": daemon, "cri": daemon.cri, "state": state, "hub": hub, "work": work}
    daemon.stop()


@pytest.fixture
def cri(request, node):
    yield from checked_cri(request, node, no_uses_left=True)


def runs(cri, ref, command, **kw) -> str:
    pod = cri.run_pod("trust-ok", {"flox.dev/environment": ref})
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=command, **kw)
    cri.start(cid)
    assert cri.wait_exit(cid) == 0, cri.logs(cid)
    out = cri.logs(cid, contains="\n")
    cri.remove_pod(pod)
    return out


def _files(node, sub: str) -> set[str]:
    d = node["state"] / sub
    return {str(p) for p in d.rglob("*")} if d.exists() else set()


def refused(cri, node, ref, *, genuine_record=False, genuine_env=False, **kw) -> str:
    """The container fails to start with floxk's reason in the CRI error; no tree and no
    half-built tree appears in the state dir (nor a remembered record, unless the record
    itself is genuine and only what it names is refused). genuine_env: only the pod's
    spec is refused; the sandbox's prefetch may realize the (valid) environment."""
    before = {sub: _files(node, sub) for sub in ("envs", "tmp", "records")}
    pod = cri.run_pod("trust-refused", {"flox.dev/environment": ref})
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=["hello"], **kw)
    with pytest.raises(grpc.RpcError) as e:
        cri.start(cid)
    assert cri.status(cid).state != pb.CONTAINER_RUNNING
    cri.remove_pod(pod)
    checked = () if genuine_env else ("envs", "tmp")
    for sub in checked + (() if genuine_record or genuine_env else ("records",)):
        new = _files(node, sub) - before[sub]
        assert not new, f"{sub}: {sorted(new)[:3]}"
    details = e.value.details()
    assert "floxk: " in details, details
    return details


def test_valid_environment_still_runs(cri, node):
    assert runs(cri, node["hub"].refs["valid"], ["hello"]) == "hello from floxk\n"


def test_attack1_forged_record_hook_never_runs(cri, node):
    details = refused(cri, node, node["hub"].refs["forged"])
    assert "not signed by a key this node trusts" in details


def test_record_signed_by_an_untrusted_key(cri, node):
    details = refused(cri, node, node["hub"].refs["otherkey"])
    assert "not signed by a key this node trusts" in details


def test_attack2_unsigned_content_addressed_output(cri, node):
    for case in ("ca_forged", "ca_signed"):
        details = refused(cri, node, node["hub"].refs[case], genuine_record=case == "ca_signed")
        assert "trust" in details, details
    store = node["work"] / "store"
    ca = node["hub"].ca_path
    # A sandbox prefetch (containerd >= 1.7) may still be fetching and refusing it again.
    assert eventually(lambda: nix.invalid_paths([ca], store_root=store) == [ca])


def test_attack3_unsigned_drv_is_never_built(cri, node):
    assert "not signed by a key" in refused(cri, node, node["hub"].refs["drv"])
    refs = node["hub"].refs
    assert "names a derivation" in refused(cri, node, refs["drv_signed"], genuine_record=True)
    out = node["hub"].drv_output
    assert nix.invalid_paths([out], store_root=node["work"] / "store") == [out]


def test_attack4_symlink_to_etc_is_the_containers_own(cri, node):
    import os

    ref = node["hub"].refs["etc_link"]
    pod = cri.run_pod("etc-link", {"flox.dev/environment": ref})
    cid = cri.create_container(pod, "app", STUB_IMAGE, command=["etc-link"])
    cri.start(cid)
    cri.wait_exit(cid)
    out = cri.logs(cid, contains="resolv.conf")
    # The container's own /etc: on the empty stub image only what CRI mounts there; the
    # host's /etc (passwd, ...) is not what the package's share/ shows.
    assert set(out.split()) == {"hostname", "hosts", "resolv.conf"}, out
    assert "passwd" in os.listdir("/etc")
    cri.remove_pod(pod)


@pytest.mark.parametrize("dest", ["//nix/store", "nix/store", "//run/floxk/env", "/nix//store/"])
def test_attack5_reserved_mount_destinations(cri, node, tmp_path, dest):
    (tmp_path / "vol").mkdir()
    mount = pb.Mount(container_path=dest, host_path=str(tmp_path / "vol"))
    details = refused(cri, node, node["hub"].refs["valid"], mounts=[mount], genuine_env=True)
    assert "mounts a volume at" in details


def test_attack6_owner_policy_on_pods(cri, node):
    assert "owner 'evil' is not allowed" in refused(cri, node, node["hub"].refs["evil"])


def test_record_of_another_ref(cri, node):
    details = refused(cri, node, node["hub"].refs["other_ref"])
    assert "signed for alice/web:1, not bob/web:1" in details


def test_older_latest_after_a_newer_one_was_used(cri, node):
    hub, ref = node["hub"], node["hub"].refs["roll"]
    assert runs(cri, ref, ["sh", "-c", 'echo "gen $GEN"']) == "gen 2\n"
    owner, name = ref.split("/")
    try:
        attacker.set_latest(hub.cache, owner, name, 1)
        assert "rollback refused" in refused(cri, node, ref, genuine_record=True)
        assert runs(cri, f"{ref}:1", ["sh", "-c", 'echo "gen $GEN"']) == "gen 1\n"  # pinned
    finally:
        attacker.set_latest(hub.cache, owner, name, 2)
