"""Figure d, N pods at once on one environment through CRI: warm flox vs a pulled image.

    python3 -m benchmarks.burst [--quick] [--levels 1,4,16,32] [--repeats N] [--out DIR]

The node of benchmarks/crinode.py (containerd 2.x, the node package's zipapps and front).
For each level N, interleaved per round:
  cold   N flox pods started at once (one thread each, RunPodSandbox -> StartContainer) on
         an environment this node has never realized: node.toml is pointed at a fresh
         chroot store and state dir first, so every pod races for the same substitution;
  image  N image pods at once, the image holding the same files (pushed to a registry on
         localhost and pulled once through CRI, so present: a warm node);
  warm   N flox pods on the environment realized at setup (the figure: warm / image,
         target <= 1.10);
The environment is the python3 runtime of the test catalog with pyapp0 and busybox.
--warm-only leaves the cold kind out (figure d alone, quicker).
Total time = until the last of the N containers runs. After each cold burst, realize.log
must show exactly one substitution per store path and one tree built.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cri_api.v1 import api_pb2 as pb  # noqa: E402

from benchmarks import common, crinode  # noqa: E402
from testkit.images import STUB_IMAGE  # noqa: E402

IMAGE_NAME = "bench/burst:1.0"
TARGET_RATIO = 1.10
COMMAND = ["sh", "-c", "exec sleep 3600"]


def burst(cri, n: int, *, flox_ref: str | None, image: str) -> float:
    """Start n pods at once; return seconds until all n containers run. Pods are removed."""
    annotations = {"flox.dev/environment": flox_ref} if flox_ref else {}
    handler = "flox" if flox_ref else ""

    def one(i: int) -> str:
        pod = cri.run_pod(f"burst-{i}", annotations, runtime_handler=handler)
        cid = cri.create_container(pod, "app", image, command=COMMAND)
        cri.start(cid)
        return cid

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        cids = list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - start
    states = [cri.status(cid).state for cid in cids]
    cri.remove_all()
    if any(s != pb.CONTAINER_RUNNING for s in states):
        raise RuntimeError(f"{handler or 'runc'} burst of {n}: not all running: {states}")
    return elapsed


def run(
    quick: bool,
    levels: list[int] | None = None,
    repeats: int | None = None,
    warm_only: bool = False,
) -> dict:
    levels = levels or ([1, 4] if quick else [1, 4, 16, 32])
    repeats = repeats or (1 if quick else 3)
    line = crinode.containerd_line()
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="floxk-bench-burst-") as tmp:
        work = Path(tmp)
        common.note("publishing the environment and building images")
        app = common.App.for_mode(quick)
        node, env = crinode.app_node(work, app, "bench/burst")
        pushed = crinode.push_env_image(node.registry, IMAGE_NAME, node.store, env)
        store_image = pushed.ref
        cri = node.start(line)
        try:
            cri.pull_image(store_image)
            common.note("warm-up: one pod of each kind")
            burst(cri, 1, flox_ref=node.env["ref"], image=STUB_IMAGE)
            burst(cri, 1, flox_ref=None, image=store_image)
            runs = 0
            for n in levels:
                checks: list[dict] = []

                def cold(n: int = n, checks: list[dict] = checks) -> float:
                    nonlocal runs
                    runs += 1
                    store, state = work / f"store-{runs}", work / f"state-{runs}"
                    node.point_at(store, state)
                    seconds = burst(cri, n, flox_ref=node.env["ref"], image=STUB_IMAGE)
                    checks.append(common.realize_log_counts(state))
                    return seconds

                def warm(n: int = n) -> float:
                    node.point_at(node.store, node.state)  # realized at setup
                    return burst(cri, n, flox_ref=node.env["ref"], image=STUB_IMAGE)

                def image(n: int = n) -> float:
                    return burst(cri, n, flox_ref=None, image=store_image)

                common.note(f"{n} pods at once, {repeats} round(s)")
                kinds = {"warm": warm, "image": image}
                if not warm_only:
                    kinds = {"cold": cold, **kinds}
                samples = common.interleaved(kinds, repeats)
                out[str(n)] = {
                    "warm": common.summary(samples["warm"]),
                    "image": common.summary(samples["image"]),
                    "warm_ratio": common.ratio(samples["warm"], samples["image"]),
                }
                if not warm_only:
                    out[str(n)] |= {
                        "cold": common.summary(samples["cold"]),
                        "ratio": common.ratio(samples["cold"], samples["image"]),
                        "trees_built": [c["trees"] for c in checks],
                        "max_substitutions_per_path": max(
                            c["max_substitutions_per_path"] for c in checks
                        ),
                        "paths_substituted": [c["paths_substituted"] for c in checks],
                    }
            cri.assert_node_clean()
        finally:
            node.stop()
    ok = all(
        v["max_substitutions_per_path"] == 1 and set(v["trees_built"]) == {1}
        for v in out.values()
        if "cold" in v
    )
    return crinode.result(
        "burst",
        quick=quick,
        line=line,
        app=app,
        closure=env.activation["closure"],
        repeats=repeats,
        warm_only=warm_only,
        image_pulled=pushed.ref,
        target_ratio=TARGET_RATIO,
        levels=out,
        one_substitution_per_path=ok,
    )


def report(doc: dict) -> None:
    rows = []
    for n, v in doc["levels"].items():
        if "cold" not in v:  # --warm-only
            rows.append(common.cell(f"{n:>2} pods, warm env (flox)", v["warm"]))
            rows.append(common.cell(f"{n:>2} pods, image", v["image"]))
            rows.append(("   warm/image", f"{v['warm_ratio']['median_ratio']:.2f}"))
            continue
        rows.append(common.cell(f"{n:>2} pods, cold env (flox)", v["cold"]))
        rows.append(common.cell(f"{n:>2} pods, warm env (flox)", v["warm"]))
        rows.append(common.cell(f"{n:>2} pods, image", v["image"]))
        rows.append(
            (
                "   cold/image; warm/image; trees; max subst/path",
                f"{v['ratio']['median_ratio']:.2f}; {v['warm_ratio']['median_ratio']:.2f};"
                f" {v['trees_built']};"
                f" {v['max_substitutions_per_path']}",
            )
        )
    rows.append(("one substitution per path everywhere", str(doc["one_substitution_per_path"])))
    common.print_table(rows)


def checks_hold(doc: dict) -> bool:
    """Every store path was substituted once, however many pods asked for it."""
    return bool(doc.get("one_substitution_per_path"))


def main() -> int:
    warm_only = ("--warm-only", {
        "action": "store_true",
        "help": "only the warm and image kinds (figure d), no cold bursts",
    })  # fmt: skip
    return common.bench_main(
        __doc__, run, report, common.LEVELS, common.REPEATS, warm_only, checks=checks_hold
    )


if __name__ == "__main__":
    sys.exit(main())
