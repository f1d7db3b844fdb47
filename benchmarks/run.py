"""Run floxk's benchmarks: `task bench` (full, regenerates the docs) and `task bench:quick`.

    python3 -m benchmarks.run [--quick] [--only NAME,...] [--out DIR] [--no-docs]

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

# In the order of the docs: issue 8's figures 1..6 plus the create-path profile.
BENCHMARKS = ("passthrough", "podstart", "createpath", "realize", "burst", "disk", "kind")
KIND_CLUSTER = "floxk"  # `floxk up`'s default cluster name (floxk/_cluster/spec.py)
QUICK_OUT = common.REPO / "build" / "bench-quick"


def checks_hold(doc: dict) -> bool:
    """The correctness parts of the figures (not the timing targets)."""
    if doc.get("benchmark") == "burst":
        return bool(doc.get("one_substitution_per_path"))
    if doc.get("benchmark") == "realize":
        c = doc["concurrent"]
        return c["trees"] == 1 and c["max_substitutions_per_path"] == 1 and not any(c["exit_codes"])
    if doc.get("benchmark") == "podstart":
        return doc.get("trees_built") == 1
    return True


def kind_status(quick: bool) -> dict:
    """Figure 6 needs the kind cluster of `floxk up`; record whether it existed."""
    import subprocess

    try:
        out = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True).stdout
        clusters = [c for c in out.split() if c]
    except OSError:
        clusters = []
    return common.result(
        "kind",
        quick=quick,
        clusters=clusters,
        skipped=(
            f"no kind cluster named {KIND_CLUSTER!r} (from `floxk up`) on this machine"
            f" (kind get clusters: {', '.join(clusters) or 'none'}); pod Ready latency in kind"
            " is not measured"
        ),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized: fewer repeats and levels")
    ap.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
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
        if name == "kind":
            doc = kind_status(a.quick)
            print(f"\n== kind: {doc['skipped']}", flush=True)
            path = common.write_json(doc, out)
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n== {name}: {module.__doc__.splitlines()[0]}", flush=True)
        try:
            extra = (
                {"baseline_rev": a.baseline_rev} if name == "podstart" and a.baseline_rev else {}
            )
            doc = module.run(a.quick, **extra)
        except Exception:  # report it, run the rest
            traceback.print_exc()
            failed.append(name)
            continue
        module.report(doc)
        path = common.write_json(doc, out)
        if not checks_hold(doc):
            failed.append(f"{name} (check)")
        print(f"({time.perf_counter() - t:.0f} s, wrote {path})", flush=True)
    if not a.quick and not a.no_docs:
        from benchmarks import report

        print(f"\nwrote {report.write_docs(out)}")
    print(f"\nbenchmarks done in {time.perf_counter() - started:.0f} s", end="")
    print(f"; FAILED: {', '.join(failed)}" if failed else "", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
