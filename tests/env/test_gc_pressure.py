"""Automatic GC at disk pressure on a small filesystem, with a running container.

The node's store and state live on a size-limited tmpfs mounted in a private mount
namespace (nothing reaches the host's mounts). Four environments from the signed test
cache: `live` (hello + busybox) runs `sleep` in a real runc container; `old` and `new`
carry 8 MiB each of their own, unused, `old` used longest ago; `trigger` is realized cold
by a real create through the front once the filesystem is past the high mark, which
starts the automatic GC. Then the timer's `floxk-node gc --auto` runs at a higher fill.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from shim.core import hub
from testkit.oci import runc_path

pytestmark = [pytest.mark.nix, pytest.mark.root]

SIZE_MIB = 64
BLOB_MIB = 8
# Nix keeps gc-reserved-space (8 MiB by default) as nix/var/nix/db/reserved, deletes it
# when a GC starts (so a full disk can still be collected) and makes it again later.
RESERVED_MIB = 8


def _blob(work: Path, name: str, seed: int) -> str:
    """A store path (host store, by content: the same bytes every run) of BLOB_MIB MiB."""
    d = work / name
    (d / "share").mkdir(parents=True)
    (d / "share" / f"{name}.bin").write_bytes(random.Random(seed).randbytes(BLOB_MIB << 20))
    return subprocess.run(
        ["nix-store", "--add", str(d)], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def envs(publish_env, signed_cache, tmp_path_factory):
    work = tmp_path_factory.mktemp("blobs")
    refs = {
        "live": publish_env(
            "gcp-live", '[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n'
        ),
        "old": publish_env("gcp-old", f'[install]\nold.store-path = "{_blob(work, "old", 1)}"\n'),
        "new": publish_env("gcp-new", f'[install]\nnew.store-path = "{_blob(work, "new", 2)}"\n'),
        "trigger": publish_env("gcp-trigger", '[install]\ngreeting.pkg-path = "greeting"\n'),
    }
    digests = {k: hub.peek(ref, [signed_cache.hub_url]).lock.digest() for k, ref in refs.items()}
    return refs, digests


def test_pressure_gc_frees_lru_unused_trees_and_running_containers_keep_working(
    tmp_path, envs, signed_cache
):
    refs, digests = envs
    args = {
        "tmp": str(tmp_path),
        "hub": signed_cache.hub_url,
        "key": signed_cache.public_key,
        "refs": refs,
        "runc": os.path.realpath(runc_path()),
    }
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
         "import sys, json; from tests.env.test_gc_pressure import scenario; "
         "print(json.dumps(scenario(json.loads(sys.argv[1]))))", json.dumps(args)],
        capture_output=True, text=True, timeout=600, env={**os.environ},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    live, old, new, trigger = (digests[k] for k in ("live", "old", "new", "trigger"))

    # After the cold realization past the high mark: the least recently used unused tree
    # went, and that was enough (below the low mark): `new` stays.
    first = out["after_realization"]
    assert first["reason"] == "after-realization" and first["ran"]
    assert first["used_percent_before"] >= first["high_percent"]
    assert first["freed_envs"] == [old]
    assert first["below_low"] and first["used_percent_after"] < first["low_percent"]
    assert first["bytes_freed"] >= BLOB_MIB << 20
    assert set(first["kept_in_use"]) >= {live, trigger}
    assert out["envs_after_first"] == sorted([live, new, trigger])
    assert out["exec_after_first"] == "hello from floxk\n"

    # The timer's run at a higher fill: frees `new` too, stays above low (nothing else
    # may go), never touches what the containers use.
    second = out["timer"]
    assert second["reason"] == "timer" and second["freed_envs"] == [new]
    assert not second["below_low"]
    assert set(second["kept_in_use"]) == {live, trigger}
    assert out["envs_after_second"] == sorted([live, trigger])
    assert out["live_paths_invalid"] == []
    assert out["exec_after_second"] == "hello from floxk\n"
    assert out["still_running"] is True

    # What it freed is in the node log, and in stats.
    gcs = [e for e in out["events"] if e["event"] == "gc"]
    assert [g["reason"] for g in gcs] == ["after-realization", "timer"]
    assert out["stats"]["last_gc"]["reason"] == "timer"
    assert out["stats"]["last_gc"]["freed_envs"] == [new]


# --- inside the private mount namespace ----------------------------------------------------


def scenario(a: dict) -> dict:
    import time

    from shim.core.annotations import EnvRef
    from shim.core.node import load_node_config
    from shim.core.service import realize_for
    from shim.front import write_front
    from testkit.oci import make_bundle

    tmp = Path(a["tmp"])
    small = tmp / "small"
    small.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "floxk-gc-test", str(small)], check=True
    )
    cfg = tmp / "node.toml"
    os.environ["FLOXK_NODE_CONFIG"] = str(cfg)
    state, store = small / "state", small / "store"

    def configure(gc_table: str) -> None:
        cfg.write_text(
            f'hubs = ["{a["hub"]}"]\ntrusted_public_keys = ["{a["key"]}"]\n'
            f'state_dir = "{state}"\nstore_root = "{store}"\nrunc = "{a["runc"]}"\n' + gc_table
        )

    configure("[gc]\nauto = false\n")
    node = load_node_config()
    ref = {k: EnvRef(*hub.parse_ref(v)) for k, v in a["refs"].items()}
    realize_for(ref["old"], node)
    time.sleep(1.1)
    realize_for(ref["new"], node)

    front = str(write_front(tmp / "bin" / "floxk-runc", a["runc"]))
    root = str(tmp / "runc")

    def runc(*argv, **kw):
        return subprocess.run([front, "--root", root, *argv], capture_output=True, text=True,
                              timeout=120, **kw)  # fmt: skip

    def create(name: str, which: str, args: list[str]) -> str:
        annotations = {
            "flox.dev/environment": a["refs"][which],
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": name,
        }
        bundle = make_bundle(tmp / name, args, annotations=annotations)
        with open(bundle / "out", "w") as out, open(bundle / "err", "w") as err:
            r = subprocess.run(  # files, not pipes: the container keeps its stdio open
                [front, "--root", root, "create", "--bundle", str(bundle), name],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=120,
            )  # fmt: skip
        assert r.returncode == 0, (bundle / "err").read_text()
        return name

    live = create("live", "live", ["sleep", "600"])
    try:
        assert runc("start", live).returncode == 0
        return _pressure(a, tmp, small, state, store, configure, runc, create, live)
    finally:
        for name in ("live", "trigger"):
            runc("delete", "--force", name)


def _pressure(a, tmp, small, state, store, configure, runc, create, live) -> dict:
    import time

    from shim.core import pressure, stats
    from shim.core.nix import invalid_paths
    from shim.core.node import load_node_config

    def fill(percent: float) -> None:
        """Grow a filler file until the filesystem is `percent` full."""
        with open(small / "filler", "ab") as f:
            while pressure.usage(store)["used_percent"] < percent:
                f.write(b"\0" * (256 << 10))
                f.flush()
                os.fsync(f.fileno())

    blob_percent = 100 * BLOB_MIB / SIZE_MIB
    now = pressure.usage(store)["used_percent"]
    fill(now + 5)
    used = pressure.usage(store)["used_percent"]
    high, low = used - 2, used - blob_percent / 2  # one blob brings it below low
    configure(f"[gc]\nhigh_percent = {high:.2f}\nlow_percent = {low:.2f}\nmin_unused_age = 0\n")
    node = load_node_config()

    create("trigger", "trigger", ["greet"])  # a cold realization: starts the automatic GC
    last = state / stats.GC_LAST
    end = time.monotonic() + 120
    while not last.exists() and time.monotonic() < end:
        time.sleep(0.1)
    first = json.loads(last.read_text())
    envs_after_first = sorted(p.name for p in (state / "envs").iterdir())
    exec_after_first = runc("exec", live, "hello").stdout

    # Past what freeing `new` (and Nix's reserved space) can bring back below low.
    fill(high + blob_percent + 100 * RESERVED_MIB / SIZE_MIB + 3)
    timer = subprocess.run(
        [sys.executable, "-c", "from shim.nodecli import main; main()", "gc", "--auto"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert timer.returncode == 0, timer.stderr
    live_tree = state / "envs" / next(state.glob("uses/*/live")).parent.name
    live_env = json.loads((live_tree / "activation.json").read_text())
    result = {
        "after_realization": first,
        "envs_after_first": envs_after_first,
        "exec_after_first": exec_after_first,
        "timer": json.loads(timer.stdout),
        "envs_after_second": sorted(p.name for p in (state / "envs").iterdir()),
        "live_paths_invalid": invalid_paths(live_env["closure"], store_root=store),
        "exec_after_second": runc("exec", live, "hello").stdout,
        "still_running": json.loads(runc("state", live).stdout)["status"] == "running",
        "events": stats.events(node.log_path),
        "stats": stats.summary(load_node_config()),
    }
    return result
