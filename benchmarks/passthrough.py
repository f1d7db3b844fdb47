"""Per-call cost of floxk-runc's pass-through vs the real runc (medians, ratios).

Every `state`, `kill`, `start`, `delete`... of every container goes through the
interposer, so this path must cost nearly nothing. Compares, for `--version` and
`state <unknown id>`:
  runc       the real runc, called directly
  front      the generated /bin/sh front (shim.front), as installed on nodes
  python     the Python slow path (python3 -I -S, shim.runc.main), what the front avoids
Rounds interleave the three.

    python3 -m benchmarks.passthrough [--quick] [--runs N] [--out DIR]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from shim.front import python_argv, write_front  # noqa: E402


def one_call(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def run(quick: bool, runs: int | None = None) -> dict:
    runs = runs or (40 if quick else 200)
    runc = shutil.which("runc")
    if runc is None:
        sys.exit("runc is not installed")
    runc = os.path.realpath(runc)
    calls: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        front = str(write_front(Path(tmp) / "floxk-runc", runc))
        env = {**os.environ, "FLOXK_NODE_CONFIG": str(Path(tmp) / "absent.toml")}
        root = ["--root", str(Path(tmp) / "runc-root")]
        for name, args in {"--version": ["--version"], "state": [*root, "state", "nope"]}.items():
            common.note(f"{name}: {runs} interleaved rounds")
            samples = common.interleaved(
                {
                    "runc": lambda args=args: one_call([runc, *args], env),
                    "front": lambda args=args: one_call([front, *args], env),
                    "python": lambda args=args: one_call([*python_argv(), *args], env),
                },
                runs,
            )
            calls[name] = {
                **common.summaries(samples),
                "front_over_runc": common.ratio(samples["front"], samples["runc"]),
                "python_over_runc": common.ratio(samples["python"], samples["runc"]),
                "front_overhead_s": common.summary(
                    [f - r for f, r in zip(samples["front"], samples["runc"], strict=True)]
                ),
            }
    return common.result("passthrough", quick=quick, runs=runs, calls=calls)


def report(doc: dict) -> None:
    rows = []
    for name, c in doc["calls"].items():
        rows += [
            common.cell(f"{name}: runc", c["runc"]),
            common.cell(f"{name}: front", c["front"]),
            common.cell(f"{name}: python", c["python"]),
            (
                f"{name}: front/runc, python/runc",
                f"{c['front_over_runc']['median_ratio']:.2f}, {c['python_over_runc']['median_ratio']:.2f}",
            ),
            common.cell(f"{name}: front overhead per call", c["front_overhead_s"]),
        ]
    common.print_table(rows)


def main() -> int:
    return common.bench_main(__doc__, run, report, ("--runs", {"type": int}))


if __name__ == "__main__":
    sys.exit(main())
