"""The trust attacks through the real floxk-runc create path: the front, the Python side,
real Nix against a signed file:// hub that an attacker without the key has edited
(tests/attacker.py), a chroot store, and the real runc running what was accepted.

Every refused create must fail with the reason in runc's log (what reaches the pod's
events), leave config.json as containerd wrote it, and leave nothing usable in the state
dir: no tree, no remembered record, no use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shim.core import nix
from shim.core.tree import tree_link
from testkit.oci import hub_node_toml
from tests import attacker
from tests.shim.test_create_e2e import _ann, assert_refused, create_logged, front_node, run_created

pytestmark = [pytest.mark.nix, pytest.mark.root]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return attacker.publish_attacked_hub(tmp_path_factory.mktemp("attacked-hub"))


@pytest.fixture
def node(tmp_path, hub):
    cfg = hub_node_toml(tmp_path, hub.url, hub.key, policy={"allowed_owners": attacker.OWNERS})
    return front_node(tmp_path, cfg)


def create(node, ref, args, *, mounts=None, name="app"):
    """create through the front; (cid, bundle, exit code, config.json as written)."""
    import uuid

    cid = f"{name}-{uuid.uuid4().hex[:8]}"
    return cid, *create_logged(node, cid, args, _ann(ref, name), mounts=mounts or ())


def run(node, ref, args, **kw) -> str:
    return run_created(node, *create(node, ref, args, **kw)[:3])


def refused(node, ref, args=("hello",), *, genuine_record=False, **kw) -> str:
    """Assert the create is refused cleanly; the error line that reaches the pod.
    genuine_record: the record itself is signed by the trusted key (only what it names is
    refused), so it may be remembered as verified."""
    msg = assert_refused(node, *create(node, ref, list(args), **kw))
    assert_nothing_usable(node, keep_records=genuine_record)
    return msg


def assert_nothing_usable(node, keep_records: bool = False) -> None:
    state = node["tmp"] / "state"
    for sub in ("envs", "tmp", "uses") + (() if keep_records else ("records",)):
        files = (
            [p for p in (state / sub).rglob("*") if not p.is_dir()]
            if (state / sub).exists()
            else []
        )
        assert files == [], f"{sub}: {[str(f) for f in files[:3]]}"


def test_valid_environment_still_runs(node, hub):
    assert run(node, hub.refs["valid"], ["hello"]) == "hello from floxk\n"


def test_attack1_forged_record_hook_never_runs(node, hub):
    msg = refused(node, hub.refs["forged"], ["sh", "-c", "echo command"])
    assert "not signed by a key this node trusts" in msg


def test_record_signed_by_an_untrusted_key_is_refused(node, hub):
    assert "not signed by a key this node trusts" in refused(node, hub.refs["otherkey"])


def test_attack2_unsigned_content_addressed_output(node, hub):
    for case in ("ca_forged", "ca_signed"):
        msg = refused(node, hub.refs[case], genuine_record=case == "ca_signed")
        assert "no signature by a key this node trusts" in msg or "not signed" in msg, msg
    store = Path(node["tmp"] / "store")
    assert nix.invalid_paths([hub.ca_path], store_root=store) == [hub.ca_path]


def test_attack3_unsigned_drv_is_never_built(node, hub):
    assert "not signed by a key this node trusts" in refused(node, hub.refs["drv"])
    assert "names a derivation" in refused(node, hub.refs["drv_signed"], genuine_record=True)
    store = Path(node["tmp"] / "store")
    assert nix.invalid_paths([hub.drv_output], store_root=store) == [hub.drv_output]


def test_attack4_symlink_to_etc_shows_the_containers_etc_not_the_hosts(node, hub):
    out = run(node, hub.refs["etc_link"], ["etc-link"])
    # share -> /etc is the container's /etc: the empty stub rootfs has none.
    assert "No such file or directory" in out, out
    assert not set(out.split()) & set(os.listdir("/etc")), out
    tree = next((node["tmp"] / "state" / "envs").iterdir())
    assert tree_link(tree, "share").endswith("-etc-link/share")


@pytest.mark.parametrize(
    "dest", ["//nix/store", "nix/store", "//run/floxk/env", "/nix//store/", "run/floxk"]
)
def test_attack5_reserved_mount_destinations_in_any_spelling(node, hub, tmp_path, dest):
    (tmp_path / "vol").mkdir(exist_ok=True)
    mount = {"destination": dest, "type": "bind", "source": str(tmp_path / "vol"),
             "options": ["rbind", "rw"]}  # fmt: skip
    msg = refused(node, hub.refs["valid"], mounts=[mount])  # refused before realizing
    assert "mounts a volume at" in msg


def test_attack6_owner_policy_on_the_pod_path(node, hub):
    assert "owner 'evil' is not allowed" in refused(node, hub.refs["evil"])


def test_record_of_another_ref_is_refused(node, hub):
    assert "signed for alice/web:1, not bob/web:1" in refused(node, hub.refs["other_ref"])
    assert run(node, hub.refs["alice"], ["hello"]) == "hello from floxk\n"


def test_older_latest_after_a_newer_one_was_used(node, hub):
    ref = hub.refs["roll"]
    assert run(node, ref, ["sh", "-c", 'echo "gen $GEN"']) == "gen 2\n"
    owner, name = ref.split("/")
    try:
        attacker.set_latest(hub.cache, owner, name, 1)
        cid, bundle, code, _ = create(node, ref, ["sh", "-c", 'echo "gen $GEN"'])
        assert code == 1
        msg = json.loads((bundle / "log.json").read_text().splitlines()[-1])["msg"]
        assert "rollback refused" in msg, msg
        assert run(node, f"{ref}:1", ["sh", "-c", 'echo "gen $GEN"']) == "gen 1\n"  # pinned
    finally:
        attacker.set_latest(hub.cache, owner, name, 2)
