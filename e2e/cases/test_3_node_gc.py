"""Garbage collection on a node. Last in the suite: it frees what earlier cases left idle."""

from __future__ import annotations

import json

import pytest

from e2e import kit
from e2e.cases.conftest import fresh
from e2e.cases.test_2_workloads import CONTROL_PLANE_TOLERATION, _state_dir

# `floxk env gc` on a node is the node's own admin zipapp (no floxk CLI there): the same
# core (shim.core.gc.collect) with the node's node.toml. Found on PATH or where `floxk up` puts it.
NODE_GC = 'exec "$(command -v floxk-node || echo /usr/local/lib/floxk/floxk-node)" gc'


def test_env_gc_keeps_what_runs_and_frees_the_rest(cluster, publish):
    """`floxk env gc` on a node keeps what runs and frees the rest."""
    busy = publish("e2e/gc-busy", fresh(cluster, {"hello": "hello", "busybox": "busybox"}))
    idle = publish("e2e/gc-idle", fresh(cluster, {"greeting": "greeting"}))
    running = kit.flox_pod("e2e-gc-busy", busy.ref, ["sleep", "3600"], restart="Always")
    running["spec"]["tolerations"] = [CONTROL_PLANE_TOLERATION]
    o = kit.start_pod(cluster, running)
    assert kit.ready(o.state), o.why()
    node = cluster.node(o.node)
    if node is None:
        pytest.skip(f"needs shell access to node {o.node} (kind, k3d)")
    # The idle environment: realized on the same node by a pod that has finished.
    done = kit.flox_pod("e2e-gc-idle", idle.ref, ["greet", "gc"])
    done["spec"]["nodeSelector"] = {"kubernetes.io/hostname": o.node}
    done["spec"]["tolerations"] = [CONTROL_PLANE_TOLERATION]
    d = kit.run_pod(cluster, done)
    assert d.state.phase == "Succeeded" and "greet: gc" in d.log, d.why()

    state_dir = _state_dir(node)
    activation = json.loads(node.read(f"{state_dir}/envs/{idle.digest}/activation.json") or "{}")
    idle_only = [p for p in activation.get("packages", []) if "-greeting-" in p]
    assert idle_only, f"the idle environment's tree is not on {o.node}: {activation}"

    result = node.json("sh", "-c", NODE_GC)
    assert idle.digest in result["freed_envs"], f"idle environment not freed: {result}"
    assert busy.digest in result["kept_envs"], f"running environment not kept: {result}"
    assert result["kept_envs"][busy.digest], f"no live container recorded: {result}"

    code, _ = node.sh("test", "-e", f"{state_dir}/envs/{idle.digest}")
    assert code != 0, "the freed tree is still there"
    code, _ = node.sh("test", "-d", f"{state_dir}/envs/{busy.digest}")
    assert code == 0, "the running environment's tree is gone"
    still_used = _closures(node, state_dir)
    for path in idle_only:
        code, _ = node.sh("test", "-e", path)
        assert (code == 0) == (path in still_used), (
            f"{path}: freed={code != 0}, in use={path in still_used}"
        )

    after = kit.exec_in(cluster, "e2e-gc-busy", "hello")
    assert "hello from floxk" in after.stdout, (
        f"the running pod lost its environment: {after.stderr}"
    )


def _closures(node: kit.Node, state_dir: str) -> set[str]:
    """Every store path the trees left on the node still need."""
    code, text = node.sh("sh", "-c", f"cat {state_dir}/envs/*/activation.json 2>/dev/null")
    paths: set[str] = set()
    decoder = json.JSONDecoder()
    i = 0
    while code == 0 and i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = decoder.raw_decode(text, i)
        paths.update(obj.get("closure", []))
    return paths
