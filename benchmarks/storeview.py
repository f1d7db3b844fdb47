"""What the per-pod store view (shim.core.storeview) costs a container create, against the whole
store, for closures of several sizes.

    python3 -m benchmarks.storeview [--quick] [--repeats N] [--sizes 1,50,200] [--out DIR]

The store is a chroot store in a temp dir holding a real busybox package (testkit.oci) and
N-1 more store directories; the environment tree's closure lists all N. Cases per N:
  floxk warm view     rewrite_spec() in process, the view exists (every create after the
                      first of an environment, or after the sandbox prefetch built it)
  floxk cold view     the same with the view built first (the first create of a tree)
  floxk whole         rewrite_spec() with store_view = false (one bind of the whole store)
  runc view / whole   the real runc's `run` of `true` with that spec: one bind mount per
                      closure path (view) against one (whole); create, start, exit, delete
Process start and the hub lookups are the same with and without the view
(benchmarks/createpath.py measures them), so they are left out. Rounds interleave.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from shim.core import storeview  # noqa: E402
from shim.core.annotations import parse_annotations  # noqa: E402
from shim.core.node import NodeConfig  # noqa: E402
from shim.core.spec import rewrite_spec  # noqa: E402
from testkit.oci import add_busybox_package, make_bundle, make_env_tree, runc_path  # noqa: E402

ANN = {"flox.dev/environment": "bench/view", "io.kubernetes.cri.container-type": "container"}


def _setup(work: Path, sizes: list[int]):
    root = work / "root"
    pkg = add_busybox_package(root, work)
    store = root / "nix" / "store"
    view_on = NodeConfig(store_root=str(root), state_dir=str(work / "state"))
    view_off = NodeConfig(store_root=str(root), state_dir=str(work / "state"), store_view=False)
    envs = {}
    for n in sizes:
        extra = [f"/nix/store/{uuid.uuid4().hex[:32]}-dummy-{i}" for i in range(n - 1)]
        for p in extra:
            (store / Path(p).name / "lib").mkdir(parents=True)
        envs[n] = make_env_tree(Path(view_on.state_dir), f"n{n}", pkg, closure=[pkg, *extra])
    bundle = make_bundle(work / "bundle", ["true"], annotations=ANN, env=["PATH=/usr/bin:/bin"])
    return view_on, view_off, envs, bundle


def run(quick: bool, repeats: int | None = None, sizes: list[int] | None = None) -> dict:
    repeats = repeats or (10 if quick else 40)
    sizes = sizes or [1, 50, 200]
    runc = runc_path()
    with tempfile.TemporaryDirectory(prefix="floxk-bench-storeview-") as tmp:
        work = Path(tmp)
        common.note(f"a chroot store with closures of {', '.join(map(str, sizes))} paths")
        on, off, envs, bundle = _setup(work, sizes)
        spec = json.loads((bundle / "config.json").read_text())
        parsed = parse_annotations(ANN)
        specs: dict[str, dict] = {}

        def rewrite(node, env, name, *, cold=False):
            def one() -> float:
                if cold:
                    shutil.rmtree(storeview.view_path(node.state_dir, env.digest), True)
                start = time.perf_counter()
                specs[name] = rewrite_spec(spec, env, node, parsed)
                return time.perf_counter() - start

            return one

        def runc_run(name):
            def one() -> float:
                (bundle / "config.json").write_text(json.dumps(specs[name]))
                argv = [runc, "--root", str(work / "runc"), "run", "--bundle", str(bundle)]
                argv.append("b-" + uuid.uuid4().hex[:12])
                return common.timed(lambda: subprocess.run(argv, check=True, capture_output=True))

            return one

        cases = {}
        for n, env in envs.items():
            cases[f"floxk warm view n={n}"] = rewrite(on, env, f"view n={n}")
            cases[f"floxk cold view n={n}"] = rewrite(on, env, f"cold n={n}", cold=True)
            cases[f"floxk whole n={n}"] = rewrite(off, env, f"whole n={n}")
        for case in list(cases.values()):
            case()  # every spec exists before runc runs one
        for n in envs:
            cases[f"runc view n={n}"] = runc_run(f"view n={n}")
            cases[f"runc whole n={n}"] = runc_run(f"whole n={n}")
        common.note(f"{repeats} interleaved rounds of {len(cases)} cases")
        common.interleaved(cases, 2)
        samples = common.interleaved(cases, repeats)
    ratios = {}
    for n in sizes:
        for side in ("floxk", "runc"):
            whole = samples[f"{side} whole n={n}"]
            for kind in ("warm view", "cold view") if side == "floxk" else ("view",):
                ratios[f"{side} {kind}/whole n={n}"] = common.ratio(
                    samples[f"{side} {kind} n={n}"], whole
                )
    return common.result(
        "storeview",
        quick=quick,
        repeats=repeats,
        sizes=sizes,
        cases=common.summaries(samples),
        ratios=ratios,
    )


def report(doc: dict) -> None:
    common.print_table([common.cell(name, s) for name, s in doc["cases"].items()])
    for name, r in doc["ratios"].items():
        print(f"{name}: {r['median_ratio']:.2f}")


def main() -> int:
    sizes = ("--sizes", {"type": common.int_list, "help": "closure sizes (default 1,50,200)"})
    return common.bench_main(__doc__, run, report, common.REPEATS, sizes)


if __name__ == "__main__":
    sys.exit(main())
