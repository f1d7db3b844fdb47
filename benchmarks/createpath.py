"""What floxk-runc's create path costs before it execs runc, and where that time goes.

    python3 -m benchmarks.createpath [--quick] [--repeats N] [--out DIR]

Every pod pays two creates through floxk-runc's front: its sandbox's (the sh front finds it
is a sandbox and passes it on) and its app container's (the front hands it to Python:
environment resolved, warm tree found, spec rewritten). This measures both, with the real
runc replaced by /bin/true (front and node.toml) so only floxk's own work is timed:
  front     the node package's sh front (shim/installer/layout.py) and behind it the
            floxk-runc zipapp (floxk/_shimbuild.py, with bytecode), as containerd runs it
  zipapp    the zipapp's Python side alone, started the way the front starts it
            (/usr/bin/python3 -I -S -c 'sys.path.insert(0, zipapp); ...')
  source    the same code from this checkout with its __pycache__ (an unpacked install)
  floor     /usr/bin/python3 -I -S -c pass (no Python side can be cheaper)
Rounds interleave the variants. `-X importtime` of one zipapp app create is kept in the
JSON (the imports that remain).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, crinode  # noqa: E402
from shim import front as front_module  # noqa: E402
from shim.installer.layout import REAL_RUNC_LINK  # noqa: E402
from shim.installer.render import render_node_front
from testkit.oci import make_bundle, write_node_toml  # noqa: E402

MANIFEST = 'version = 1\n[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n'
PYTHON = crinode.NODE_PYTHON


def _timed_run(argv: list[str], env: dict, before=None) -> float:
    if before:
        before()
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr.decode(errors='replace')[-800:]}")
    return elapsed


def importtime(argv: list[str], env: dict, top: int = 12) -> list[dict]:
    """The `top` imports with the largest cumulative time (us) in one run."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True)
    rows = []
    for line in proc.stderr.decode().splitlines():
        parts = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0].strip().isdigit():
            self_us, cum_us, name = (x.strip() for x in parts)
            rows.append({"module": name, "self_us": int(self_us), "cumulative_us": int(cum_us)})
    return sorted(rows, key=lambda r: r["cumulative_us"], reverse=True)[:top]


def run(quick: bool, repeats: int | None = None) -> dict:
    repeats = repeats or (15 if quick else 60)
    with tempfile.TemporaryDirectory(prefix="floxk-bench-createpath-") as tmp:
        work = Path(tmp)
        common.note("publishing and realizing the environment")
        node = crinode.make_node(work, MANIFEST)
        node.realize()
        bin_dir = work / "bin"
        crinode.install_node_bin(bin_dir)
        config = write_node_toml(
            work / "node-true.toml",
            hubs=[node.env["hub"]],
            trusted_public_keys=[node.env["key"]],
            state_dir=str(node.state),
            store_root=str(node.store),
            runc="/bin/true",  # time floxk's side only
        )
        env = {"FLOXK_NODE_CONFIG": str(config), "PATH": crinode.SYSTEM_PATH}
        # node.toml is parsed once and cached, but not while it is seconds old (shim/core/node.py):
        # a node's node.toml is older than that.
        time.sleep(2.5)
        front = bin_dir / "floxk-runc-front-true"
        front.write_text(
            render_node_front(str(bin_dir), PYTHON).replace(
                f"exec {bin_dir}/{REAL_RUNC_LINK} ", "exec /bin/true "
            )
        )
        front.chmod(0o755)
        pod = {
            "flox.dev/environment": node.env["ref"],
            "io.kubernetes.cri.sandbox-id": "0" * 64,
            "io.kubernetes.cri.sandbox-name": "bench",
        }
        sandbox = make_bundle(
            work / "sandbox", ["/pause"],
            annotations={**pod, "io.kubernetes.cri.container-type": "sandbox"},
        )  # fmt: skip
        app = make_bundle(
            work / "app", ["sh", "-c", "hello"],
            annotations={**pod, "io.kubernetes.cri.container-type": "container",
                         "io.kubernetes.cri.container-name": "app"},
        )  # fmt: skip
        pristine = (app / "config.json").read_bytes()

        def restore() -> None:  # each app create starts from containerd's spec
            (app / "config.json").write_bytes(pristine)

        source = front_module.python_argv(PYTHON, "shim.runc:main", common.REPO)
        zipapp = front_module.python_argv(PYTHON, "shim.runc:main", bin_dir / "floxk-runc")
        runners = {"front": [str(front)], "zipapp": zipapp, "source": source}
        cases = {"floor": lambda: _timed_run([PYTHON, "-I", "-S", "-c", "pass"], env)}
        n = [0]

        def case(argv: list[str], bundle: Path, before=None):
            def one() -> float:
                n[0] += 1
                return _timed_run(
                    [*argv, "create", "--bundle", str(bundle), f"c{n[0]}"], env, before
                )

            return one

        cases["front sandbox"] = case(runners["front"], sandbox)
        for name, argv in runners.items():
            cases[f"{name} app"] = case(argv, app, restore)
        common.note(f"{repeats} interleaved rounds of {len(cases)} cases")
        common.interleaved(cases, 2)  # page cache; the checkout's __pycache__ gets written
        samples = common.interleaved(cases, repeats)
        restore()
        profile = {"app": importtime([*zipapp, "create", "--bundle", str(app), "prof"], env)}
        shutil.rmtree(node.state / "uses", ignore_errors=True)
    return common.result(
        "createpath",
        quick=quick,
        repeats=repeats,
        cases={name: common.summary(v) for name, v in samples.items()},
        importtime_zipapp=profile,
    )


def report(doc: dict) -> None:
    common.print_table([common.cell(name, s) for name, s in doc["cases"].items()])
    for kind, rows in doc["importtime_zipapp"].items():
        top = ", ".join(f"{r['module']} {r['cumulative_us'] / 1000:.1f}" for r in rows[:6])
        print(f"zipapp {kind} create, slowest imports (cumulative ms): {top}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    a = ap.parse_args()
    doc = run(a.quick, a.repeats)
    report(doc)
    print(f"wrote {common.write_json(doc, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
