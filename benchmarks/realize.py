"""Benchmark: what realization costs on top of Nix, warm and concurrent.

    python3 -m benchmarks.realize [--quick] [--repeats N] [--out DIR]

Builds the busybox test catalog, locks and pushes an environment (hello + web) to a signed
file:// cache in a temp dir, then measures, in the same run, rounds interleaved:
  - raw:   `nix copy --from CACHE --to ROOT` of the install paths (signatures checked)
  - cold:  shim.core.realize.realize() into a fresh chroot store (substitute + roots + tree)
  - warm:  realize() again (the per-pod cost once the tree exists)
  - 8 concurrent cold realizations in separate processes (substitutions per path must be 1)
Prints medians with quartiles and the cold/raw ratio (target <= 1.2) and writes JSON.
Needs Nix (Debian nix-bin) and a static busybox; run as root on a bare Nix install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from shim.core import nix  # noqa: E402
from shim.core.model import current_system  # noqa: E402
from shim.core.realize import realize  # noqa: E402

REPO = common.REPO
MANIFEST = 'version = 1\n[install]\nhello.pkg-path = "hello"\nweb.pkg-path = "web"\n'
TARGET_RATIO = 1.2
CONCURRENCY = 8

CHILD = """
import json, sys
from pathlib import Path
from shim.core.lockfile import lock_from_dict
from shim.core.realize import realize
a = json.loads(sys.argv[1])
lock = lock_from_dict(a["lock"])
realize(lock, system=a["system"], substituters=[a["hub"]], trusted_keys=[a["key"]],
        store_root=Path(a["store"]), state_dir=Path(a["state"]))
"""


def raw_copy(ctx: dict, root: Path) -> None:
    nix.run_nix(
        ["nix", *nix.base_options(), "copy", "--from", ctx["hub"], "--to", str(root)]
        + nix.substitution_options([ctx["hub"]], [ctx["key"]])
        + ctx["paths"],
        what="raw nix copy",
    )


def cold_realize(ctx: dict, root: Path, state: Path):
    return realize(
        ctx["lock"],
        system=current_system(),
        substituters=[ctx["hub"]],
        trusted_keys=[ctx["key"]],
        store_root=root,
        state_dir=state,
    )


def concurrent(ctx: dict, work: Path) -> dict:
    args = {
        "lock": ctx["lock"].raw,  # realization only: the record is read once, by the parent
        "hub": ctx["hub"],
        "key": ctx["key"],
        "system": current_system(),
        "store": str(work / "store"),
        "state": str(work / "state"),
    }
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO)
        for _ in range(CONCURRENCY)
    ]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - start
    counts = common.realize_log_counts(work / "state")
    return {
        "seconds": elapsed,
        "exit_codes": codes,
        "trees": counts["trees"],
        "max_substitutions_per_path": counts["max_substitutions_per_path"],
        "paths": counts["paths_substituted"],
    }


def run(quick: bool, repeats: int | None = None) -> dict:
    repeats = repeats or (3 if quick else 9)
    with tempfile.TemporaryDirectory(prefix="floxk-bench-") as tmp:
        work = Path(tmp)
        common.note("publishing the environment")
        ctx = common.publish(work / "hub", MANIFEST)
        n = [0]

        def raw() -> float:
            n[0] += 1
            return common.timed(lambda: raw_copy(ctx, work / f"raw-{n[0]}"))

        warm_samples = []

        def cold() -> float:
            n[0] += 1
            root, state = work / f"cold-{n[0]}", work / f"state-{n[0]}"
            seconds = common.timed(lambda: cold_realize(ctx, root, state))
            warm_samples.append(common.timed(lambda: cold_realize(ctx, root, state)))
            return seconds

        common.note(f"{repeats} interleaved rounds of raw nix copy and cold realize")
        samples = common.interleaved({"raw": raw, "cold": cold}, repeats)
        common.note(f"{CONCURRENCY} concurrent cold realizations")
        conc = concurrent(ctx, work / "concurrent")
        closure = len(
            cold_realize(ctx, work / f"cold-{n[0]}", work / f"state-{n[0]}").activation["closure"]
        )
    return common.result(
        "realize",
        quick=quick,
        repeats=repeats,
        closure_paths=closure,
        raw=common.summary(samples["raw"]),
        cold=common.summary(samples["cold"]),
        warm=common.summary(warm_samples),
        cold_over_raw=common.ratio(samples["cold"], samples["raw"]),
        target_ratio=TARGET_RATIO,
        concurrent=conc,
    )


def report(doc: dict) -> None:
    conc = doc["concurrent"]
    common.print_table(
        [
            common.cell("raw nix copy", doc["raw"]),
            common.cell("cold realize", doc["cold"]),
            (
                "cold / raw",
                f"{doc['cold_over_raw']['median_ratio']:.2f} (target <= {TARGET_RATIO})",
            ),
            common.cell("warm realize", doc["warm"], lambda s: f"{s * 1e6:.0f} us"),
            (f"{CONCURRENCY} concurrent cold", common.ms(conc["seconds"])),
            ("  trees built", str(conc["trees"])),
            ("  max substitutions per path", str(conc["max_substitutions_per_path"])),
        ]
    )


def checks_hold(doc: dict) -> bool:
    """One substitution per store path and one tree under concurrent creates, none failed."""
    conc = doc["concurrent"]
    ok = conc["max_substitutions_per_path"] == 1 and conc["trees"] == 1
    return ok and not any(conc["exit_codes"])


def main() -> int:
    return common.bench_main(__doc__, run, report, common.REPEATS, checks=checks_hold)


if __name__ == "__main__":
    sys.exit(main())
