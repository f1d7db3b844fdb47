"""Per-call cost of floxk-runc's pass-through vs the real runc (medians, ratios).

Every `state`, `kill`, `start`, `delete`... of every container goes through the
interposer, so this path must cost nearly nothing. Compares, for `--version` and
`state <unknown id>`:
  runc       the real runc, called directly
  front      the generated /bin/sh front (shim.front), as installed on nodes
  python     the Python slow path (python3 -I -S, shim.runc.main), what the front avoids

    python3 benchmarks/passthrough.py [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shim.front import python_argv, write_front


def median_ms(argv: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    a = ap.parse_args()
    runc = shutil.which("runc")
    if runc is None:
        sys.exit("runc is not installed")
    runc = os.path.realpath(runc)
    with tempfile.TemporaryDirectory() as tmp:
        front = str(write_front(Path(tmp) / "floxk-runc", runc))
        env = {**os.environ, "FLOXK_NODE_CONFIG": str(Path(tmp) / "absent.toml")}
        root = ["--root", str(Path(tmp) / "runc-root")]
        calls = {"--version": ["--version"], "state": [*root, "state", "no-such-container"]}
        print(f"runs per cell: {a.runs}; median ms per call")
        print(
            f"{'call':<12}{'runc':>9}{'front':>9}{'python':>9}{'front/runc':>12}{'python/runc':>13}"
        )
        for name, args in calls.items():
            r = median_ms([runc, *args], a.runs, env)
            f = median_ms([front, *args], a.runs, env)
            p = median_ms([*python_argv(), *args], a.runs, env)
            print(f"{name:<12}{r:>9.2f}{f:>9.2f}{p:>9.2f}{f / r:>12.2f}{p / r:>13.2f}")
        print(f"front overhead per call: {f - r:+.2f} ms (python path: {p - r:+.2f} ms)")


if __name__ == "__main__":
    main()
