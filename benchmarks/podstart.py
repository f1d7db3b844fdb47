"""Figure e, warm pod start through CRI: a flox pod on a warm environment vs an image pod.

    python3 -m benchmarks.podstart [--quick] [--repeats N] [--out DIR]

One containerd 2.x daemon (benchmarks/crinode.py: the node package's zipapps and front,
a signed file:// hub, a chroot store) runs both kinds of pod, interleaved:
  flox   runtime handler `flox`, flox.dev/environment = the published environment (the
         python3 runtime, pyapp0 and busybox), the empty stub image; the environment was
         realized before (warm)
  image  runtime handler "" (plain runc), an image holding the same closure at /nix/store
         plus the environment tree's bin/ etc. at / (what an image-based deployment ships),
         pushed to a registry on localhost and pulled once through CRI (warm: present)
Both run `sh -c 'echo started && exec sleep 3600'`; before the rounds, one pod of each kind
runs pyapp0 (python3 from the closure). One sample is RunPodSandbox -> CreateContainer ->
StartContainer returned (the container is running), as kubelet drives it; the phases are
kept too. Each pod is checked (RUNNING, "started" in its log) and removed outside the timed
part. The figure: median flox / median image (target <= 1.05).
--baseline-rev REV adds a third kind, interleaved: the flox runtime built from shim/ at REV
(before/after numbers for a change of the create path, in the same run).
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
from testkit.images import STUB_IMAGE  # noqa: E402

IMAGE_NAME = "bench/podstart:1.0"
COMMAND = ["sh", "-c", "echo started && exec sleep 3600"]
EXPECT = "started"
TARGET_RATIO = 1.05
PHASES = ("run_pod", "create", "start")
BASELINE = "flox-baseline"  # runtime handler of --baseline-rev


def start_pod(
    cri,
    *,
    flox_ref: str | None,
    image: str,
    phases: dict[str, list[float]],
    handler: str = "flox",
    command: list[str] = COMMAND,
    expect: str = EXPECT,
) -> float:
    """One timed pod start; checked and removed afterwards. Returns seconds."""
    annotations = {"flox.dev/environment": flox_ref} if flox_ref else {}
    handler = handler if flox_ref else ""
    t0 = time.perf_counter()
    pod = cri.run_pod("bench", annotations, runtime_handler=handler)
    t1 = time.perf_counter()
    cid = cri.create_container(pod, "app", image, command=command)
    t2 = time.perf_counter()
    cri.start(cid)
    t3 = time.perf_counter()
    for name, value in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2), strict=True):
        phases[name].append(value)
    state = cri.status(cid).state
    out = cri.logs(cid, contains=expect)
    cri.remove_pod(pod)
    if state != pb.CONTAINER_RUNNING or expect not in out:
        raise RuntimeError(
            f"{handler or 'runc'} pod did not run: state {pb.ContainerState.Name(state)}, log {out!r}"
        )
    return t3 - t0


def tree_at(rev: str, dest: Path) -> Path:
    """The checkout's code (shim, floxk, benchmarks, tests, testkit) as it was at git revision `rev`,
    extracted into dest: that revision builds its own zipapps and fronts."""
    dest.mkdir(parents=True)
    listed = subprocess.run(
        ["git", "-C", str(common.REPO), "ls-tree", "--name-only", rev],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    wanted = [d for d in ("shim", "floxk", "benchmarks", "tests", "testkit") if d in listed]
    archive = subprocess.run(
        ["git", "-C", str(common.REPO), "archive", rev, *wanted], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run(quick: bool, repeats: int | None = None, baseline_rev: str | None = None) -> dict:
    repeats = repeats or (6 if quick else 30)
    line = crinode.containerd_line()
    with tempfile.TemporaryDirectory(prefix="floxk-bench-podstart-") as tmp:
        work = Path(tmp)
        extra = {BASELINE: tree_at(baseline_rev, work / "rev")} if baseline_rev else {}
        common.note("publishing the environment and building images")
        app = common.App.for_mode(quick)
        node, env = crinode.app_node(work, app)  # warm: what the pods below find
        pushed = crinode.push_env_image(node.registry, IMAGE_NAME, node.store, env)
        common.note(f"starting containerd {line.version}")
        cri = node.start(line, extra)
        try:
            cri.pull_image(pushed.ref)
            image_ref = pushed.ref
            common.note("both kinds run the app once (python3 from the closure)")
            for ref, img in ((node.env["ref"], STUB_IMAGE), (None, image_ref)):
                start_pod(
                    cri, flox_ref=ref, image=img, phases={p: [] for p in PHASES},
                    command=["sh", "-c", f"{app.command()} && exec sleep 3600"],
                    expect=app.expect(),
                )  # fmt: skip
            kinds = ["flox", "image", *extra]
            phases: dict[str, dict[str, list[float]]] = {}
            cases = {
                "flox": lambda: start_pod(
                    cri, flox_ref=node.env["ref"], image=STUB_IMAGE, phases=phases["flox"]
                ),
                "image": lambda: start_pod(
                    cri, flox_ref=None, image=image_ref, phases=phases["image"]
                ),
            }
            if extra:
                cases[BASELINE] = lambda: start_pod(
                    cri,
                    flox_ref=node.env["ref"],
                    image=STUB_IMAGE,
                    phases=phases[BASELINE],
                    handler=BASELINE,
                )
            phases.update({kind: {p: [] for p in PHASES} for kind in kinds})
            common.note("warm-up: one pod of each kind")
            common.interleaved(cases, 1)
            for kind in phases:
                phases[kind] = {p: [] for p in PHASES}
            common.note(f"{repeats} interleaved rounds")
            samples = common.interleaved(cases, repeats)
            cri.assert_node_clean()
        finally:
            node.stop()
        trees = common.realize_log_counts(node.state)["trees"]
    doc = crinode.result(
        "podstart",
        quick=quick,
        line=line,
        app=app,
        closure=env.activation["closure"],
        repeats=repeats,
        target_ratio=TARGET_RATIO,
        image_pulled=pushed.ref,
        trees_built=trees,
        flox=common.summary(samples["flox"]),
        image=common.summary(samples["image"]),
        ratio=common.ratio(samples["flox"], samples["image"]),
        **(
            {
                "baseline": {
                    "rev": baseline_rev,
                    "flox": common.summary(samples[BASELINE]),
                    "ratio": common.ratio(samples[BASELINE], samples["image"]),
                    "flox_over_baseline": common.ratio(samples["flox"], samples[BASELINE]),
                }
            }
            if extra
            else {}
        ),
        phases={kind: common.summaries(by_phase) for kind, by_phase in phases.items()},
    )
    return doc


def report(doc: dict) -> None:
    rows = [
        common.cell("flox pod, warm env (median [q1 .. q3])", doc["flox"]),
        common.cell("image pod, same files", doc["image"]),
        ("flox / image", f"{doc['ratio']['median_ratio']:.3f} (target <= {TARGET_RATIO})"),
        (
            "  per-round ratio [q1 .. q3]",
            f"{doc['ratio']['paired_median']:.3f} [{doc['ratio']['paired_q1']:.3f} .."
            f" {doc['ratio']['paired_q3']:.3f}]",
        ),
    ]
    if "baseline" in doc:
        b = doc["baseline"]
        rows += [
            common.cell(f"flox pod, shim/ at {b['rev']}", b["flox"]),
            (f"flox@{b['rev']} / image", f"{b['ratio']['median_ratio']:.3f}"),
            ("flox now / flox before", f"{b['flox_over_baseline']['median_ratio']:.3f}"),
        ]
    for kind in doc["phases"]:
        for p in PHASES:
            rows.append(common.cell(f"  {kind} {p}", doc["phases"][kind][p]))
    common.print_table(rows)


def main() -> int:
    baseline = ("--baseline-rev", {
        "help": "also run pods on a flox runtime built from shim/ at this git revision (before/after)"
    })  # fmt: skip
    return common.bench_main(__doc__, run, report, common.REPEATS, baseline)


if __name__ == "__main__":
    sys.exit(main())
