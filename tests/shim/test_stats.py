"""What the node did: phase times as JSON lines, `floxk-node stats`, the Prometheus textfile.

Real creates through the front (one cold, one warm) on a chroot store, then the real
floxk-node entry point reads them back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from shim.core import stats
from shim.front import write_front
from testkit.oci import hub_node_toml, make_bundle, publish_test_hub, runc_path

pytestmark = [pytest.mark.nix, pytest.mark.root]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stats")
    hub = publish_test_hub(tmp / "hub")
    # No automatic GC: this host's disk may be past the default high mark, and the test counts GCs.
    cfg = hub_node_toml(tmp, hub.url, hub.key, gc={"auto": False})
    front = write_front(tmp / "bin" / "floxk-runc", os.path.realpath(runc_path()))
    env = {**os.environ, "FLOXK_NODE_CONFIG": str(cfg)}
    for _ in range(2):  # cold, then warm
        cid = f"app-{uuid.uuid4().hex[:8]}"
        annotations = {
            "flox.dev/environment": "acme/plain",
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "app",
        }
        bundle = make_bundle(tmp / cid, ["hello"], annotations=annotations)
        root = ["--root", str(tmp / "runc")]
        with open(bundle / "err", "w") as err:
            r = subprocess.run(
                [str(front), *root, "create", "--bundle", str(bundle), cid],
                env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=120,
            )  # fmt: skip
        assert r.returncode == 0, (bundle / "err").read_text()
        subprocess.run([str(front), *root, "delete", "--force", cid], env=env, timeout=60)
    return {"tmp": tmp, "env": env, "digest": hub.digests["plain"]}


def _floxk_node(node, *args):
    return subprocess.run(
        [sys.executable, "-c", "from shim.nodecli import main; main()", *args],
        env=node["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_creates_and_the_realization_log_their_phases(node):
    log = stats.events(str(node["tmp"] / "state" / "floxk.log"))
    creates = [e for e in log if e["event"] == "create"]
    assert [e["cold"] for e in creates] == [True, False]
    for e in creates:
        assert e["env"] == "acme/plain" and e["digest"] == node["digest"]
        assert set(e["ms"]) == {"resolve", "realize", "rewrite"}
        assert all(v >= 0 for v in e["ms"].values())
    (realized,) = [e for e in log if e["event"] == "realize"]
    assert realized["env"] == "acme/plain:1" and realized["paths"] >= 2
    assert set(realized["ms"]) == {"substitute", "verify", "tree"}
    # The cold create waited for the realization; the warm one did not.
    assert creates[0]["ms"]["realize"] >= realized["ms"]["substitute"]
    assert creates[1]["ms"]["realize"] < creates[0]["ms"]["realize"]


def test_floxk_node_stats_json_text_and_prometheus(node):
    prom = node["tmp"] / "textfile" / "floxk.prom"
    prom.parent.mkdir(exist_ok=True)
    r = _floxk_node(node, "stats", "-o", "json", "--prometheus", str(prom))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    (env,) = data["environments"]
    assert env["digest"] == node["digest"] and env["env"] == "acme/plain:1"
    assert env["users"] == [] and env["bytes"] > 0 and env["last_used"] > 0
    assert data["environments_bytes"] == env["bytes"]
    assert data["creates"] == {"cold": 1, "warm": 1} and data["realizations"] == 1
    assert data["slowest_realizations"][0]["digest"] == node["digest"]
    assert 0 < data["filesystem"]["used_percent"] <= 100
    assert data["last_gc"] is None

    samples = {}
    for line in prom.read_text().splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["floxk_environments"] == 1
    assert samples['floxk_creates_total{start="cold"}'] == 1
    assert samples["floxk_environments_bytes"] == env["bytes"]
    assert samples["floxk_gc_last_run_timestamp_seconds"] == 0
    assert 0 < samples["floxk_store_filesystem_used_ratio"] <= 1

    text = _floxk_node(node, "stats")
    assert text.returncode == 0 and "environments: 1 (0 in use)" in text.stdout
    assert "last GC: never" in text.stdout

    # A manual GC shows up as the last GC.
    gc = _floxk_node(node, "gc")
    assert gc.returncode == 0, gc.stderr
    after = json.loads(_floxk_node(node, "stats", "-o", "json").stdout)
    assert after["environments"] == [] and after["last_gc"]["reason"] == "manual"
    assert after["last_gc"]["freed_envs"] == [node["digest"]]


def test_log_rotates_past_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(stats, "ROTATE_BYTES", 1000)
    log = str(tmp_path / "node" / "floxk.log")
    for i in range(40):
        stats.emit(log, "create", n=i)
    assert os.path.getsize(log) <= 1000 and os.path.getsize(log + ".1") <= 1100
    seen = [e["n"] for e in stats.events(log)]
    assert seen == sorted(seen) and seen[-1] == 39 and len(seen) < 40
