"""Benchmark: what realization costs on top of Nix, warm and concurrent.

    python3 benchmarks/realize.py [--repeats N] [--json FILE]

Builds the busybox test catalog, locks and pushes an environment (hello + web) to a signed
file:// cache in a temp dir, then measures, in the same run:
  - raw:   `nix copy --from CACHE --to ROOT` of the install paths (signatures checked)
  - cold:  shim.realize.realize() into a fresh chroot store (substitute + roots + tree)
  - warm:  realize() again (the per-pod cost once the tree exists)
  - 8 concurrent cold realizations in separate processes (substitutions per path must be 1)
Prints a table with medians and the cold/raw ratio (target <= 1.2) and writes JSON.
Needs Nix (Debian nix-bin) and a static busybox; run as root on a bare Nix install.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from e2e.catalog import prepare  # noqa: E402
from floxk._lock import lock_environment  # noqa: E402
from floxk._push import push_environment  # noqa: E402
from shim import hub, nix  # noqa: E402
from shim.model import current_system  # noqa: E402
from shim.realize import realize  # noqa: E402

MANIFEST = 'version = 1\n[install]\nhello.pkg-path = "hello"\nweb.pkg-path = "web"\n'
TARGET_RATIO = 1.2
CONCURRENCY = 8

CHILD = """
import json, sys
from pathlib import Path
from shim import hub
from shim.realize import realize
a = json.loads(sys.argv[1])
lock = hub.resolve(a["ref"], [a["hub"]]).lock
realize(lock, system=a["system"], substituters=[a["hub"]], trusted_keys=[a["key"]],
        store_root=Path(a["store"]), state_dir=Path(a["state"]))
"""


def setup(work: Path) -> dict:
    catalog = prepare(work / "catalog")
    env = work / "env"
    env.mkdir()
    (env / "manifest.toml").write_text(MANIFEST)
    lock_environment(env, catalog=catalog)
    keys = work / "keys"
    keys.mkdir()
    subprocess.run(
        ["nix-store", "--generate-binary-cache-key", "bench-1", keys / "sk", keys / "pk"],
        check=True,
    )
    cache = work / "cache"
    pushed = push_environment(env, to=cache.as_uri(), name="bench/env", signing_key=keys / "sk")
    lock = hub.resolve(pushed.ref, [pushed.cache_url]).lock
    return {
        "ref": pushed.ref,
        "hub": pushed.cache_url,
        "key": (keys / "pk").read_text().strip(),
        "lock": lock,
        "paths": pushed.paths,
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
        "ref": ctx["ref"],
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
    lines = (work / "state" / "realize.log").read_text().splitlines()
    substituted = [line.split()[4] for line in lines if line.split()[2] == "substitute"]
    per_path = {p: substituted.count(p) for p in set(substituted)}
    return {
        "seconds": elapsed,
        "exit_codes": codes,
        "trees": sum(1 for line in lines if line.split()[2] == "tree"),
        "max_substitutions_per_path": max(per_path.values(), default=0),
        "paths": len(per_path),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/realize.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="floxk-bench-") as tmp:
        work = Path(tmp)
        ctx = setup(work)
        raw, cold, warm = [], [], []
        for i in range(args.repeats):
            raw.append(timed(lambda i=i: raw_copy(ctx, work / f"raw-{i}")))
            root, state = work / f"cold-{i}", work / f"state-{i}"
            cold.append(timed(lambda root=root, state=state: cold_realize(ctx, root, state)))
            warm.append(timed(lambda root=root, state=state: cold_realize(ctx, root, state)))
        conc = concurrent(ctx, work / "concurrent")

    result = {
        "repeats": args.repeats,
        "closure_paths": len(ctx["lock"].packages) + 1,
        "raw_nix_copy_median_s": statistics.median(raw),
        "cold_realize_median_s": statistics.median(cold),
        "warm_realize_median_s": statistics.median(warm),
        "cold_over_raw": statistics.median(cold) / statistics.median(raw),
        "target_ratio": TARGET_RATIO,
        "concurrent": conc,
        "samples": {"raw": raw, "cold": cold, "warm": warm},
    }
    rows = [
        ("raw nix copy (median)", f"{result['raw_nix_copy_median_s'] * 1000:.1f} ms"),
        ("cold realize (median)", f"{result['cold_realize_median_s'] * 1000:.1f} ms"),
        ("cold / raw", f"{result['cold_over_raw']:.2f} (target <= {TARGET_RATIO})"),
        ("warm realize (median)", f"{result['warm_realize_median_s'] * 1e6:.0f} us"),
        (f"{CONCURRENCY} concurrent cold", f"{conc['seconds'] * 1000:.1f} ms"),
        ("  trees built", str(conc["trees"])),
        ("  max substitutions per path", str(conc["max_substitutions_per_path"])),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    ok = conc["max_substitutions_per_path"] == 1 and conc["trees"] == 1
    return 0 if ok and not any(conc["exit_codes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
