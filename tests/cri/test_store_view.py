"""The per-pod store view through CRI: a flox container's /nix/store holds its environment's
closure and nothing else of the node's store, for its command and for exec'd processes;
node.toml `store_view = false` gives the whole store, as before.

The node is test_flox_pods' (fronts in front of the line's runc-v2 and the pair's runc, a
signed file:// hub, a chroot store) plus one environment of other packages, acme/greet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shim.core import gc
from testkit.oci import write_node_toml
from tests.cri.test_flox_pods import cri, node, run  # noqa: F401 - fixtures and helper

pytestmark = [pytest.mark.cri, pytest.mark.root, pytest.mark.nix]

GREET = 'version = 1\n[install]\ngreeting.pkg-path = "greeting"\nbusybox.pkg-path = "busybox"\n'
LIST = ["sh", "-c", "ls -a /nix/store"]


@pytest.fixture(scope="module")
def greet(node):  # noqa: F811
    """acme/greet pushed to the node's hub with the hub's key: its digest."""
    from floxk._lock import lock_environment
    from floxk._push import push_environment

    hub = node["hub"]
    work = Path(hub.cache).parent
    d = work / "greet"
    d.mkdir(exist_ok=True)
    (d / "manifest.toml").write_text(GREET)
    lock_environment(d, catalog=str(work / "catalog"))
    pushed = push_environment(d, to=hub.url, name="acme/greet", signing_key=work / "key.sec")
    return pushed.digest


def _closure(node, digest) -> list[str]:  # noqa: F811
    activation = json.loads((node["state"] / "envs" / digest / "activation.json").read_text())
    return sorted(Path(p).name for p in activation["closure"])


def _listing(cri, cid) -> list[str]:  # noqa: F811
    assert cri.wait_exit(cid) == 0
    out = cri.logs(cid, contains="..")
    return sorted(n for n in out.split() if n not in (".", ".."))


def _node_toml(node, **extra) -> None:  # noqa: F811
    hub = node["hub"]
    path = Path(node["daemon"].env["FLOXK_NODE_CONFIG"])
    write_node_toml(
        path,
        hubs=[hub.url],
        trusted_public_keys=[hub.key],
        state_dir=str(node["state"]),
        store_root=str(path.parent / "store"),
        **extra,
    )


def test_each_pod_sees_only_its_closure_and_exec_sees_the_same(cri, node, greet):  # noqa: F811
    plain = node["hub"].digests["plain"]
    pod, cid = run(cri, "acme/plain", LIST, name="plain")
    seen = _listing(cri, cid)
    assert seen == _closure(node, plain)
    pod2, cid2 = run(cri, "acme/greet", LIST, name="greet")
    seen2 = _listing(cri, cid2)
    assert seen2 == _closure(node, greet)
    # The other environment's own paths are not there (busybox is in both closures).
    only_greet = set(seen2) - set(seen)
    assert only_greet and any("-greeting-" in n for n in only_greet)
    whole = set(p.name for p in (Path(node["daemon"].env["FLOXK_NODE_CONFIG"]).parent / "store" / "nix" / "store").iterdir())  # fmt: skip
    assert only_greet <= whole and not only_greet & set(seen)
    cri.remove_pod(pod)
    cri.remove_pod(pod2)

    # exec'd processes share the container's mount namespace: the same view, read-only.
    pod, cid = run(cri, "acme/plain", ["sleep", "3600"], name="sleeper")
    code, out, err = cri.exec_sync(cid, LIST)
    assert code == 0, err
    assert sorted(n for n in out.split() if n not in (".", "..")) == _closure(node, plain)
    greeting = next(n for n in only_greet if "-greeting-" in n)
    code, out, err = cri.exec_sync(cid, ["sh", "-c", f"ls /nix/store/{greeting}"])
    assert code != 0 and "No such file" in err
    code, out, err = cri.exec_sync(cid, ["sh", "-c", "touch /nix/store/x || mkdir /nix/store/y"])
    assert code != 0 and "Read-only file system" in err, err
    bb = next(n for n in seen if "busybox" in n)
    code, out, err = cri.exec_sync(cid, ["sh", "-c", f"touch /nix/store/{bb}/z"])
    assert code != 0 and "Read-only file system" in err, err
    cri.remove_pod(pod)


def test_one_view_per_tree_shared_by_its_pods_and_removed_by_gc(cri, node):  # noqa: F811
    plain = node["hub"].digests["plain"]
    pods = [run(cri, "acme/plain", ["sleep", "3600"], name=f"twin{i}") for i in range(2)]
    views = node["state"] / "views"
    assert (views / plain / "binds.json").is_file()
    sources = []
    for _, cid in pods:
        code, out, err = cri.exec_sync(
            cid, ["sh", "-c", "grep ' /nix/store ' /proc/self/mountinfo"]
        )
        assert code == 0, err
        sources.append(out.split()[3])  # the mount's root within its filesystem
    assert sources[0] == sources[1] and sources[0].endswith(f"/views/{plain}/store")
    # While pods use it, GC keeps tree and view; once they are gone, both go.
    store_root = Path(node["daemon"].env["FLOXK_NODE_CONFIG"]).parent / "store"
    kept = gc.collect(state_dir=node["state"], store_root=store_root)
    assert plain in kept["kept_envs"] and (views / plain).is_dir()
    for pod, _ in pods:
        cri.remove_pod(pod)
    freed = gc.collect(state_dir=node["state"], store_root=store_root)
    assert plain in freed["freed_envs"]
    assert not (views / plain).exists() and not (node["state"] / "envs" / plain).exists()
    # The next pod realizes the environment, and its view, again.
    pod, cid = run(cri, "acme/plain", LIST, name="again")
    assert _listing(cri, cid) == _closure(node, plain)
    cri.remove_pod(pod)


def test_store_view_off_is_the_whole_store(cri, node, greet):  # noqa: F811
    # Both environments realized, so the whole store holds both closures.
    for ref in ("acme/plain", "acme/greet"):
        pod, cid = run(cri, ref, ["hello"] if ref == "acme/plain" else ["greet", "x"], name="warm")
        assert cri.wait_exit(cid) == 0
        cri.remove_pod(pod)
    _node_toml(node, store_view=False)
    try:
        pod, cid = run(cri, "acme/plain", LIST, name="whole")
        seen = _listing(cri, cid)
        assert set(_closure(node, node["hub"].digests["plain"])) < set(seen)
        assert set(_closure(node, greet)) <= set(seen)
        ro = run(cri, "acme/plain", ["sh", "-c", "touch /nix/store/x || exit 9"], name="ro")[1]
        assert cri.wait_exit(ro) == 9
        cri.remove_all()
    finally:
        _node_toml(node)
