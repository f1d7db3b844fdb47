"""Figure a, the cold first pod on a node through CRI: an http hub vs a registry pull.

The environment from an http:// hub vs the same files as an image pulled from a registry.

    python3 -m benchmarks.cold [--quick] [--rounds N] [--out DIR]

The node of benchmarks/crinode.py (containerd 2.x, the node package's zipapps and fronts).
The application is the test catalog's python3 runtime (~25 store paths, thousands of files)
with pyapp0 and busybox. Each round, interleaved:
  flox     node.toml is pointed at a fresh chroot store and state dir and at the hub served
           over http:// on localhost (testkit/httpserve.py): the pod's sandbox prefetch and
           the app create substitute the whole closure (signatures checked) and build the tree;
  single   the image (closure at /nix/store, tree at /, one gzip layer) is removed from the
           node first (CRI RemoveImage), then RunPodSandbox -> PullImage from the registry on
           localhost (distribution v3) -> CreateContainer -> StartContainer, as kubelet does;
  layered  the same with one layer per store path.
One sample: from RunPodSandbox until StartContainer returned (the container runs `sh -c
'echo started && exec sleep 3600'`), checked afterwards. Bytes fetched: what the http hub
served (flox) and the image's manifest, config and layers (image). The pause and stub images
are on the node already for both kinds (a node image carries them). Target: flox / image
<= 1.0 against both shapes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cri_api.v1 import api_pb2 as pb  # noqa: E402

from benchmarks import common, crinode  # noqa: E402
from shim import server as create_server  # noqa: E402
from testkit.httpserve import StaticServer  # noqa: E402
from testkit.images import STUB_IMAGE  # noqa: E402

COMMAND = ["sh", "-c", "echo started && exec sleep 3600"]
SHAPES = ("single", "layered")
TARGET_RATIO = 1.0
ROUNDS = {True: 1, False: 5}


def start_pod(cri, *, flox_ref: str | None, image: str, pull: bool) -> float:
    """RunPodSandbox [-> PullImage] -> CreateContainer -> StartContainer; seconds."""
    annotations = {"flox.dev/environment": flox_ref} if flox_ref else {}
    t0 = time.perf_counter()
    pod = cri.run_pod("cold", annotations, runtime_handler="flox" if flox_ref else "")
    if pull:
        cri.pull_image(image)
    cid = cri.create_container(pod, "app", image, command=COMMAND)
    cri.start(cid)
    seconds = time.perf_counter() - t0
    state = cri.status(cid).state
    out = cri.logs(cid, contains="started")
    cri.remove_pod(pod)
    if state != pb.CONTAINER_RUNNING or "started" not in out:
        raise RuntimeError(f"cold pod did not run: {pb.ContainerState.Name(state)}, {out!r}")
    return seconds


def log_times(state: Path) -> dict[str, float]:
    """From the node's realize.log: when the last store path was substituted and when the
    tree was built (epoch seconds)."""
    out: dict[str, float] = {}
    log = state / "realize.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        at, _, event = line.split()[:3]
        if event in ("substitute", "tree"):
            key = "substituted" if event == "substitute" else "tree_built"
            out[key] = max(out.get(key, 0.0), float(at))
    return out


def wipe(*dirs: Path) -> None:
    """Remove chroot stores (their store paths are read-only)."""
    for d in dirs:
        subprocess.run(["chmod", "-R", "u+w", str(d)], capture_output=True)
        subprocess.run(["rm", "-rf", str(d)], check=True)


def run(quick: bool, rounds: int | None = None) -> dict:
    rounds = rounds or ROUNDS[quick]
    line = crinode.containerd_line()
    with tempfile.TemporaryDirectory(prefix="floxk-bench-cold-") as tmp:
        work = Path(tmp)
        common.note("publishing the environment, building and pushing the images")
        app = common.App.for_mode(quick)
        node, env = crinode.app_node(work, app, "bench/cold")  # the flox rounds: fresh stores
        pushed = {
            shape: crinode.push_env_image(
                node.registry, f"bench/cold-{shape}:1.0", node.store, env, shape
            )
            for shape in SHAPES
        }
        server = StaticServer(node.env["cache"])
        cri = node.start(line)
        fetched: dict[str, list[float]] = {"flox": [], **{s: [] for s in SHAPES}}
        flox_phases: dict[str, list[float]] = {}
        count = 0
        try:

            def flox() -> float:
                nonlocal count
                count += 1
                store, state = work / f"store-{count}", work / f"state-{count}"
                node.point_at(store, state, hub=server.url)
                before, wall = server.bytes_sent, time.time()
                seconds = start_pod(cri, flox_ref=node.env["ref"], image=STUB_IMAGE, pull=False)
                fetched["flox"].append(float(server.bytes_sent - before))
                for event, at in log_times(state).items():  # when the node's work ended
                    flox_phases.setdefault(event, []).append(at - wall)
                # The round's create server (its state dir's) writes into it: gone first.
                create_server.stop(state)
                wipe(store, state)
                return seconds

            def image(shape: str) -> float:
                ref = pushed[shape].ref
                if cri.image_present(ref):
                    cri.remove_image(ref)
                seconds = start_pod(cri, flox_ref=None, image=ref, pull=True)
                fetched[shape].append(float(pushed[shape].size))
                return seconds

            cases = {"flox": flox, **{s: (lambda s=s: image(s)) for s in SHAPES}}
            common.note(f"{rounds} interleaved rounds of cold pods")
            samples = common.interleaved(cases, rounds)
            cri.assert_node_clean()
        finally:
            server.close()
            node.stop()
        closure = env.activation["closure"]
        files, size = common.tree_stats(node.store, closure)
        checks = common.realize_log_counts(work / f"state-{count}") if count else {}
    return crinode.result(
        "cold",
        quick=quick,
        line=line,
        app=app,
        closure=closure,
        rounds=rounds,
        target_ratio=TARGET_RATIO,
        closure_files=files,
        closure_bytes=size,
        images={s: {"ref": p.ref, "bytes": p.size} for s, p in pushed.items()},
        hub_requests=server.requests,
        **common.versus(samples, list(SHAPES)),
        bytes_fetched=common.summaries(fetched),
        flox_node_work=common.summaries(flox_phases),
        last_flox_round=checks,
    )


def report(doc: dict) -> None:
    rows = [
        common.closure_row("closure", doc),
        common.cell("flox, env from the http hub", doc["flox"]),
        *(common.cell(f"image pulled, {s}", doc[s]) for s in SHAPES),
        *common.ratio_rows(doc),
    ]
    for k, v in doc.get("flox_node_work", {}).items():
        rows.append(common.cell(f"  flox: {k} after RunPodSandbox began", v))
    rows += common.bytes_rows("bytes fetched", doc["bytes_fetched"])
    common.print_table(rows)


def main() -> int:
    return common.rounds_main(__doc__, run, report, ROUNDS)


if __name__ == "__main__":
    sys.exit(main())
