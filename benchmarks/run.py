"""Run floxk's benchmarks: `task bench` (full, regenerates the docs) and `task bench:quick`.

    python3 -m benchmarks.run [--quick] [--only NAME,...] [--rounds N] [--levels 1,4,16]
                              [--out DIR] [--no-docs]

Full mode writes benchmarks/results/<name>.json and then docs/benchmarks.md with its plots
(benchmarks/report.py). Quick mode (CI-sized, a few minutes) writes build/bench-quick/ and
leaves the docs alone. Every benchmark prints its table as it finishes; a benchmark that
fails is reported and the others still run. Exit status 1 if any failed or a correctness
check did not hold (one substitution per store path, one tree per environment).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

# In the order of the docs: issue 15's figures a-e (cold first pod, update, node disk, N pods
# at once, warm pod start), then issue 8's pass-through, create-path profile, realization and
# kind figures and figure 7 (floxk dev's edit loop), then figures a and b in kind (kindab).
BENCHMARKS = (
    "cold",
    "update",
    "disk",
    "burst",
    "podstart",
    "passthrough",
    "createpath",
    "realize",
    "kind",
    "devloop",
    "kindab",
)
# The benchmarks that create a kind cluster.
KIND_BENCHMARKS = ("kind", "devloop", "kindab")
# Figures 6 and 7 and kindab create a kind cluster (minutes): only the full run measures them.
KIND_QUICK_SKIP = (
    "quick mode does not create the kind clusters of figures 6, 7 and a/b in kind (minutes);"
    " `task bench` or `python3 -m benchmarks.{name} --quick` measures it"
)
QUICK_OUT = common.REPO / "build" / "bench-quick"


def checks_hold(doc: dict) -> bool:
    """The correctness parts of the figures (not the timing targets): the benchmark's own
    checks_hold where it has one."""
    name = doc.get("benchmark")
    if name == "podstart":
        return doc.get("trees_built") == 1
    if name in ("burst", "realize", *KIND_BENCHMARKS):
        return importlib.import_module(f"benchmarks.{name}").checks_hold(doc)
    return True


def sizes(run, a: argparse.Namespace) -> dict:
    """The size options a benchmark's run() takes: rounds (or repeats), levels, baseline."""
    import inspect

    params = inspect.signature(run).parameters
    out: dict = {}
    if a.rounds:
        for name in ("rounds", "repeats"):
            if name in params:
                out[name] = a.rounds
    if a.levels and "levels" in params:
        out["levels"] = [int(x) for x in a.levels.split(",")]
    if a.baseline_rev and "baseline_rev" in params:
        out["baseline_rev"] = a.baseline_rev
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized: fewer repeats and levels")
    ap.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    ap.add_argument(
        "--rounds",
        type=int,
        help="rounds (repeats) of every benchmark that has them (default by mode)",
    )
    ap.add_argument(
        "--levels", help="levels of the benchmarks that have them (N pods, K apps), e.g. 1,4,16"
    )
    ap.add_argument("--out", type=Path, help="JSON directory (default by mode)")
    ap.add_argument("--no-docs", action="store_true", help="full mode: do not rewrite the docs")
    ap.add_argument(
        "--baseline-rev", help="podstart: also time a flox runtime built from shim/ at this git rev"
    )
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    out = a.out or (QUICK_OUT if a.quick else common.RESULTS)
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        if name in KIND_BENCHMARKS and a.quick:
            doc = common.result(name, quick=True, skipped=KIND_QUICK_SKIP.format(name=name))
            print(f"\n== {name}: skipped: {doc['skipped']}", flush=True)
            common.write_json(doc, out)
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n== {name}: {module.__doc__.splitlines()[0]}", flush=True)
        try:
            doc = module.run(a.quick, **sizes(module.run, a))
        except Exception:  # report it, run the rest
            traceback.print_exc()
            failed.append(name)
            continue
        if doc.get("skipped"):  # a missing prerequisite, not a failure: the reason is kept
            print(f"skipped: {doc['skipped']}", flush=True)
            common.write_json(doc, out)
            continue
        module.report(doc)
        path = common.write_json(doc, out)
        if not checks_hold(doc):
            failed.append(f"{name} (check)")
        print(f"({time.perf_counter() - t:.0f} s, wrote {path})", flush=True)
    run_doc = {
        "benchmark": "run",
        "command": "python3 -m benchmarks.run " + " ".join(sys.argv[1:]),
        "benchmarks": names,
        "failed": failed,
        "seconds": round(time.perf_counter() - started),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    common.write_json(run_doc, out)
    if not a.quick and not a.no_docs:
        from benchmarks import report

        print(f"\nwrote {report.write_docs(out)}")
    print(f"\nbenchmarks done in {time.perf_counter() - started:.0f} s", end="")
    print(f"; FAILED: {', '.join(failed)}" if failed else "", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
