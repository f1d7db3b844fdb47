"""floxk-runc create end to end: hub record -> signed cache -> chroot store -> rewritten spec -> runc.

The environment is locked from floxk's test catalog and pushed to a signed file:// cache
with the real `floxk env push` core; the node realizes it with real Nix.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from shim.core.nix import base_options
from shim.front import write_front
from testkit.oci import hub_node_toml, make_bundle, publish_test_hub, runc_path

pytestmark = [pytest.mark.nix, pytest.mark.root]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return publish_test_hub(tmp_path_factory.mktemp("hub"))


def front_node(tmp_path: Path, cfg: Path) -> dict:
    """A node whose runc is the floxk-runc front over the real runc, reading node.toml `cfg`."""
    front = write_front(tmp_path / "bin" / "floxk-runc", os.path.realpath(runc_path()))
    env = {**os.environ, "FLOXK_NODE_CONFIG": str(cfg)}
    return {"front": str(front), "env": env, "root": str(tmp_path / "runc"), "tmp": tmp_path}


@pytest.fixture
def node(tmp_path, hub):
    return front_node(tmp_path, hub_node_toml(tmp_path, hub.url, hub.key))


def _ann(ref, name="app"):
    return {
        "flox.dev/environment": ref,
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": name,
    }


def _runc(node, *args, **kw):
    return subprocess.run(
        [node["front"], "--root", node["root"], *args],
        env=node["env"],
        text=True,
        timeout=120,
        **kw,
    )


def _create(node, ref, args, name="app"):
    """create through the front, stdio to files (create must not hold our pipes)."""
    cid = f"{name}-{uuid.uuid4().hex[:8]}"
    bundle = make_bundle(node["tmp"] / cid, args, annotations=_ann(ref, name))
    log = bundle / "log.json"
    with open(bundle / "out", "w") as out, open(bundle / "err", "w") as err:
        r = _runc(
            node, "--log", str(log), "--log-format", "json", "create", "--bundle", str(bundle), cid,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )  # fmt: skip
    return cid, bundle, r


def _start_and_wait(node, cid, bundle):
    assert _runc(node, "start", cid, capture_output=True).returncode == 0
    for _ in range(200):
        state = json.loads(_runc(node, "state", cid, capture_output=True).stdout)
        if state["status"] == "stopped":
            break
        time.sleep(0.05)
    return (bundle / "out").read_text(), (bundle / "err").read_text()


def create_logged(node, cid, args, annotations, *, mounts=()) -> tuple[Path, int, str]:
    """create `cid` through the front, runc's log as JSON in bundle/log.json, stdio to files;
    `mounts` appended to the spec first; (bundle, exit code, config.json as written)."""
    bundle = make_bundle(node["tmp"] / cid, args, annotations=annotations)
    if mounts:
        spec = json.loads((bundle / "config.json").read_text())
        spec["mounts"] += mounts
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
    written = (bundle / "config.json").read_text()
    with open(bundle / "out", "w") as out, open(bundle / "err", "w") as err:
        r = _runc(
            node, "--log", str(bundle / "log.json"), "--log-format", "json",
            "create", "--bundle", str(bundle), cid,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )  # fmt: skip
    return bundle, r.returncode, written


def run_created(node, cid, bundle, code) -> str:
    """Assert the create worked, start the container, wait for it, delete it; its output."""
    assert code == 0, (bundle / "err").read_text()
    out, err = _start_and_wait(node, cid, bundle)
    _runc(node, "delete", cid, capture_output=True)
    return out + err


def assert_refused(node, cid, bundle, code, written) -> str:
    """Assert the create was refused cleanly: exit 1, a floxk error as runc's last log line
    (what reaches the pod's events), config.json as containerd wrote it, no container; that
    error line."""
    assert code == 1
    last = json.loads((bundle / "log.json").read_text().splitlines()[-1])
    assert last["level"] == "error" and last["msg"].startswith("floxk: ")
    assert (bundle / "config.json").read_text() == written  # as containerd wrote it
    assert _runc(node, "state", cid, capture_output=True).returncode != 0  # no container
    return last["msg"]


def _uses(node):
    return sorted(p.name for p in (node["tmp"] / "state" / "uses").glob("*/*"))


def test_env_with_hook_and_vars_runs_and_is_released_on_delete(node):
    cid, bundle, r = _create(node, "acme/hello", ["sh", "-c", 'hello; echo "$COLOR $HOOKED $$"'])
    assert r.returncode == 0, (bundle / "err").read_text()
    spec = json.loads((bundle / "config.json").read_text())
    assert any(m["destination"] == "/nix/store" for m in spec["mounts"])
    assert _uses(node) == [cid]
    out, err = _start_and_wait(node, cid, bundle)
    assert out == "hook-ran\nhello from floxk\nblue yes 1\n", err
    assert _runc(node, "delete", cid, capture_output=True).returncode == 0
    assert _uses(node) == []


def test_two_containers_one_env_realize_once(node):
    a = _create(node, "acme/plain", ["hello"], name="one")
    b = _create(node, "acme/plain", ["hello"], name="two")
    assert a[2].returncode == 0 and b[2].returncode == 0
    envs = list((node["tmp"] / "state" / "envs").iterdir())
    assert len(envs) == 1
    trees = [
        line
        for line in (node["tmp"] / "state" / "realize.log").read_text().splitlines()
        if " tree " in f" {line} "
    ]
    assert len(trees) == 1, trees
    for cid, bundle, _ in (a, b):
        spec = json.loads((bundle / "config.json").read_text())
        src = next(m["source"] for m in spec["mounts"] if m["destination"] == "/run/floxk/env")
        assert Path(src) == envs[0]
        out, _err = _start_and_wait(node, cid, bundle)
        assert out == "hello from floxk\n"
        _runc(node, "delete", cid, capture_output=True)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [("acme/absent", "acme/absent"), ("acme/hello:99", "99"), ("acme/broken", "-web-1.0")],
)
def test_unknown_env_or_missing_path_fails_create_cleanly(node, ref, reason):
    cid, bundle, r = _create(node, ref, ["hello"])
    assert r.returncode == 1
    last = json.loads((bundle / "log.json").read_text().splitlines()[-1])
    assert last["level"] == "error" and reason in last["msg"]
    assert "/run/floxk" not in (bundle / "config.json").read_text()
    assert _uses(node) == []
    assert not (node["tmp"] / "state" / "envs").exists() or not any(
        (node["tmp"] / "state" / "envs").iterdir()
    )


def test_untrusted_signature_fails_create_and_leaves_node_clean(node, tmp_path):
    other = tmp_path / "other"
    subprocess.run(
        [
            "nix-store",
            *base_options(),
            "--generate-binary-cache-key",
            "someone-else-1",
            other,
            tmp_path / "o.pub",
        ],
        check=True,
    )
    cfg = Path(node["env"]["FLOXK_NODE_CONFIG"])
    text = cfg.read_text().splitlines()
    cfg.write_text("\n".join(
        f"trusted_public_keys = [{json.dumps((tmp_path / 'o.pub').read_text().strip())}]"
        if line.startswith("trusted_public_keys") else line for line in text
    ) + "\n")  # fmt: skip
    before = None
    cid, bundle, r = _create(node, "acme/plain", ["hello"])
    before = (bundle / "config.json").read_text()
    assert r.returncode == 1
    last = json.loads((bundle / "log.json").read_text().splitlines()[-1])
    assert last["level"] == "error" and last["msg"].startswith("floxk: ")
    assert "signature" in last["msg"] or "trusted" in last["msg"]
    assert "/run/floxk" not in before
    assert _uses(node) == []
    assert _runc(node, "state", cid, capture_output=True).returncode != 0


def test_a_gc_removing_the_tree_as_a_create_marks_its_use_never_leaves_a_dangling_spec(node):
    """The race a node met in kind: a GC saw no user of a warm tree, and while it removed the
    tree and its store view (holding the digest's lock) a create marked its use, found the
    tree still there and wrote a spec naming it; runc then failed on the vanished view.
    Here the test is that GC: it holds the lock, waits for the create's mark, removes the
    tree as GC does, and lets go. The create must realize again and run."""
    import fcntl

    from shim.core import gc

    cid, bundle, r = _create(node, "acme/plain", ["hello"], name="warm")
    assert r.returncode == 0, (bundle / "err").read_text()
    _runc(node, "delete", cid, capture_output=True)  # the tree is warm and has no user
    state, store = node["tmp"] / "state", node["tmp"] / "store"
    (digest,) = os.listdir(state / "envs")
    lock = os.open(state / "locks" / f"{digest}.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        cid = f"app-{uuid.uuid4().hex[:8]}"
        bundle = make_bundle(node["tmp"] / cid, ["hello"], annotations=_ann("acme/plain"))
        out, err = open(bundle / "out", "w"), open(bundle / "err", "w")
        create = subprocess.Popen(
            [node["front"], "--root", node["root"], "--log", str(bundle / "log.json"),
             "--log-format", "json", "create", "--bundle", str(bundle), cid],
            env=node["env"], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )  # fmt: skip
        mark = state / "uses" / digest / cid
        for _ in range(2000):
            if mark.exists() or create.poll() is not None:
                break
            time.sleep(0.005)
        assert mark.exists(), (bundle / "err").read_text()
        gc._remove_env(state, store, digest)  # what a GC past its users check does next
    finally:
        os.close(lock)
    assert create.wait(timeout=120) == 0, (bundle / "err").read_text()
    spec = json.loads((bundle / "config.json").read_text())
    for m in spec["mounts"]:
        if m["type"] == "bind" and m["source"].startswith(str(state)):
            assert os.path.exists(m["source"]), m["source"]
    out_text, err_text = _start_and_wait(node, cid, bundle)
    assert out_text == "hello from floxk\n", err_text
    _runc(node, "delete", cid, capture_output=True)
