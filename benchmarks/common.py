"""What every floxk benchmark shares: statistics, interleaved repeats, versions, JSON, setup.

Each benchmark module has `run(quick: bool) -> dict` (the result, JSON-ready) and a `main()`
for running it alone; benchmarks/run.py runs them all and benchmarks/report.py turns the
JSON files into docs/benchmarks.md and its plots.

Numbers on a shared machine drift, so each figure is a ratio against a baseline measured
in the same run, repeats interleaved (A B, B A, A B ...) so that load changes hit both sides.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python3 benchmarks/x.py` as well as `-m benchmarks.x`
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"


# --- statistics ---------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, Any]:
    """Median and spread of one cell: n, median, quartiles, min, max, and the IQR relative
    to the median (a noise figure that does not care about the unit)."""
    s = sorted(samples)
    if not s:
        return {"n": 0}
    q1, q3 = _quartiles(s)
    med = statistics.median(s)
    return {
        "n": len(s),
        "median": med,
        "q1": q1,
        "q3": q3,
        "min": s[0],
        "max": s[-1],
        "iqr_rel": (q3 - q1) / med if med else 0.0,
        "samples": list(samples),
    }


def _quartiles(s: list[float]) -> tuple[float, float]:
    if len(s) < 2:
        return s[0], s[0]
    q = statistics.quantiles(s, n=4, method="inclusive")
    return q[0], q[2]


def ratio(numerator: list[float], denominator: list[float]) -> dict[str, Any]:
    """Ratio of medians, plus the spread of the per-round ratios (rounds paired by index:
    the samples of one round were taken back to back)."""
    med = statistics.median(numerator) / statistics.median(denominator)
    pairs = [a / b for a, b in zip(numerator, denominator, strict=False) if b]
    out: dict[str, Any] = {"median_ratio": med}
    if pairs:
        pq1, pq3 = _quartiles(sorted(pairs))
        out.update(paired_median=statistics.median(pairs), paired_q1=pq1, paired_q3=pq3)
    return out


def summaries(series: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """summary() of each named series."""
    return {name: summary(samples) for name, samples in series.items()}


def versus(samples: dict[str, list[float]], others: list[str], base: str = "flox") -> dict:
    """A figure's comparison: the summaries of `base` and of each of `others`, and under
    "ratio" base / each of them (ratio())."""
    return {
        base: summary(samples[base]),
        **{name: summary(samples[name]) for name in others},
        "ratio": {name: ratio(samples[base], samples[name]) for name in others},
    }


def interleaved(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each case `repeats` times, alternating the order every round (A B, B A, ...).

    A case returns its own measurement (seconds), so setup and teardown stay out of it.
    """
    names = list(cases)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            out[name].append(cases[name]())
    return out


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- the machine and the versions -----------------------------------------------------------


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _version_in(text: str | None) -> str | None:
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text or "")
    return m.group(1) if m else None


def versions(containerd: str | None = None) -> dict[str, Any]:
    """Versions of what the numbers depend on. `containerd`: the line a benchmark drove
    (the CRI benchmarks start their own daemon from the installed lines)."""
    from shim import __version__

    runc = _first_line(["runc", "--version"])
    nix = _first_line(["nix", "--version"])
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    try:
        from testkit.registry import registry_binary, registry_version

        registry = registry_version(registry_binary(build=False))
    except (OSError, FileNotFoundError):
        registry = None
    return {
        "registry": registry,
        "floxk": __version__,
        "floxk_commit": commit,
        "containerd": containerd,
        "runc": _version_in(runc),
        "nix": _version_in(nix),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def machine() -> dict[str, Any]:
    """How busy the machine was: other builds run beside the benchmarks."""
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load]}


def result(name: str, *, quick: bool, containerd: str | None = None, **data: Any) -> dict:
    """The JSON document of one benchmark: its data plus versions and machine load."""
    return {
        "benchmark": name,
        "mode": "quick" if quick else "full",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(containerd),
        "machine": machine(),
        **data,
    }


def write_json(doc: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{doc['benchmark']}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", flush=True)


def cell(label: str, s: dict[str, Any], unit: Callable[[float], str] = ms) -> tuple[str, str]:
    """One table row: median [q1 .. q3] (n=N)."""
    return (label, f"{unit(s['median'])}  [{unit(s['q1'])} .. {unit(s['q3'])}]  n={s['n']}")


def closure_row(label: str, doc: dict[str, Any]) -> tuple[str, str]:
    """The row naming a closure's size: closure_paths, closure_files, closure_bytes."""
    return (
        label,
        f"{doc['closure_paths']} store paths, {doc['closure_files']} files,"
        f" {doc['closure_bytes'] / 2**20:.1f} MiB",
    )


def ratio_rows(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """One row a comparison in doc["ratio"] (versus()), against doc["target_ratio"]."""
    return [
        (f"{prefix}flox / {name}", f"{r['median_ratio']:.2f} (target <= {doc['target_ratio']})")
        for name, r in doc["ratio"].items()
    ]


def bytes_rows(label: str, fetched: dict[str, dict], places: int = 1) -> list[tuple[str, str]]:
    """One row a side: the median of its bytes (summaries()), in MiB."""
    return [
        (f"{label}, {name}", f"{s['median'] / 2**20:.{places}f} MiB") for name, s in fetched.items()
    ]


def note(msg: str) -> None:
    """Progress for the reader, on stderr (stdout carries the numbers)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- a published environment (the busybox test catalog, signed file:// cache) ----------------


# The application of figures a-e. Full runs: the test catalog's python3 runtime (the host's
# interpreter, standard library and shared libraries as ~25 store paths, thousands of
# files; testkit/closures.py) with pyapp<i> on it. Quick runs (CI-sized): app<i> on busybox
# alone, so the same code paths run in seconds.
class App:
    def __init__(self, realistic: bool) -> None:
        self.realistic = realistic
        self.prefix = "pyapp" if realistic else "app"

    @classmethod
    def for_mode(cls, quick: bool) -> App:
        return cls(realistic=not quick)

    def manifest(self, i: int = 0) -> str:
        runtime = 'python3.pkg-path = "python3"\n' if self.realistic else ""
        return (
            f"version = 1\n[install]\n{runtime}{self.prefix}{i}.pkg-path = "
            f'"{self.prefix}{i}"\nbusybox.pkg-path = "busybox"\n'
        )

    def command(self, i: int = 0) -> str:
        return f"{self.prefix}{i}"

    def expect(self, revision: int = 1, i: int = 0) -> str:
        """What the app prints (the start of its one line)."""
        return f"{self.prefix}{i} revision {revision} on"

    def catalog(self, dest: Path, app_revision: str | None = None) -> str:
        return catalog(dest, runtime=self.realistic, app_revision=app_revision)

    def describe(self) -> str:
        if self.realistic:
            return "the python3 runtime of the test catalog with pyapp<i> and busybox"
        return "app<i> and busybox of the test catalog (quick: no runtime)"


def catalog(dest: Path, *, runtime: bool = True, app_revision: str | None = None) -> str:
    """A prepared copy of the test catalog (with the python3 runtime unless runtime=False);
    its flake ref."""
    from e2e.catalog import prepare

    if not runtime:
        return prepare(dest, app_revision=app_revision)
    from testkit.closures import cached_python_runtime

    return prepare(dest, runtime=cached_python_runtime(), app_revision=app_revision)


def publish(
    work: Path, manifest: str, name: str = "bench/env", *, flake: str | None = None
) -> dict[str, Any]:
    """Lock `manifest` against the test catalog (`flake`, default: the busybox-only catalog)
    and push it, signed, to a file:// cache.

    Returns ref, hub (= cache URL), cache (its directory), key (public key line), secret
    (the signing key file), lock, paths (install paths).
    """
    from floxk._lock import lock_environment
    from floxk._push import push_environment
    from shim.core import hub

    flake = flake or catalog(work / "catalog", runtime=False)
    env = work / "env"
    env.mkdir(parents=True)
    (env / "manifest.toml").write_text(manifest)
    lock_environment(env, catalog=flake)
    keys = work / "keys"
    keys.mkdir()
    subprocess.run(
        ["nix-store", "--generate-binary-cache-key", "bench-1", keys / "sk", keys / "pk"],
        check=True,
    )
    cache = work / "cache"
    pushed = push_environment(env, to=cache.as_uri(), name=name, signing_key=keys / "sk")
    return {
        "ref": pushed.ref,
        "hub": pushed.cache_url,
        "cache": cache,
        "key": (keys / "pk").read_text().strip(),
        "secret": keys / "sk",
        "lock": hub.peek(pushed.ref, [pushed.cache_url]).lock,
        "paths": pushed.paths,
    }


def realize_log_counts(state_dir: Path) -> dict[str, Any]:
    """From state_dir/realize.log: trees built and substitutions per store path."""
    log = state_dir / "realize.log"
    lines = log.read_text().splitlines() if log.exists() else []
    substituted = [line.split()[4] for line in lines if line.split()[2] == "substitute"]
    per_path = {p: substituted.count(p) for p in set(substituted)}
    return {
        "trees": sum(1 for line in lines if line.split()[2] == "tree"),
        "paths_substituted": len(per_path),
        "max_substitutions_per_path": max(per_path.values(), default=0),
        "per_path": per_path,
    }


def tree_stats(store: Path, paths: list[str]) -> tuple[int, int]:
    """(files, bytes) of store `paths` under the chroot store `store` (apparent sizes)."""
    files = size = 0
    for p in paths:
        for dirpath, _, names in os.walk(Path(store) / p.lstrip("/")):
            for n in names:
                files += 1
                size += os.lstat(os.path.join(dirpath, n)).st_size
    return files, size


def int_list(text: str) -> list[int]:
    """An option's "1,4,16" as [1, 4, 16]."""
    return [int(x) for x in text.split(",")]


REPEATS = ("--repeats", {"type": int})
LEVELS = ("--levels", {"type": int_list, "help": "comma-separated, e.g. 1,4,16"})


def rounds_option(rounds: dict[bool, int]) -> tuple[str, dict]:
    return ("--rounds", {"type": int, "help": f"rounds (default {rounds[False]})"})


def bench_main(
    doc: str,
    run: Callable,
    report: Callable,
    *options: tuple[str, dict],
    checks: Callable[[dict], bool] | None = None,
    quick_help: str | None = None,
    out: Path | None = RESULTS,
) -> int:
    """`python3 -m benchmarks.NAME [--quick] [OPTIONS] [--out DIR]`: run(quick, option=value
    for each of `options` (flag, argparse keywords), named as run's parameters), report,
    write the JSON into --out (default `out`; None: only when given); exit 1 where
    `checks` says the figures' correctness parts did not hold."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    for flag, keywords in options:
        ap.add_argument(flag, **keywords)
    ap.add_argument("--out", type=Path, default=out, help="write the JSON into this directory")
    a = vars(ap.parse_args())
    result_doc = run(a.pop("quick"), **{k: v for k, v in a.items() if k != "out"})
    report(result_doc)
    if a["out"]:
        print(f"wrote {write_json(result_doc, a['out'])}")
    return 0 if checks is None or checks(result_doc) else 1


def kind_main(
    doc: str,
    run: Callable,
    report: Callable,
    rounds: dict[bool, int],
    cluster: str,
    checks: Callable[[dict], bool],
    quick_help: str | None = None,
) -> int:
    """bench_main for a benchmark that creates the kind cluster `cluster`: run(quick,
    rounds, keep), --keep leaves the cluster running, the JSON only where --out is given;
    a run that skipped (no kind, no Docker) says why instead of its table."""
    keep = ("--keep", {"action": "store_true", "help": f"leave the cluster {cluster} running"})

    def report_or_reason(result_doc: dict) -> None:
        if result_doc.get("skipped"):
            print(f"skipped: {result_doc['skipped']}")
        else:
            report(result_doc)

    return bench_main(
        doc,
        run,
        report_or_reason,
        rounds_option(rounds),
        keep,
        checks=checks,
        quick_help=quick_help or f"{rounds[True]} rounds",
        out=None,
    )


def rounds_main(doc: str, run: Callable, report: Callable, rounds: dict[bool, int]) -> int:
    """bench_main for a benchmark whose run() takes (quick, rounds)."""
    return bench_main(
        doc, run, report, rounds_option(rounds), quick_help=f"{rounds[True]} round(s)"
    )
