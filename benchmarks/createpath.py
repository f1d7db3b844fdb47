"""What floxk-runc's create path costs before it execs runc, and where that time goes.

    python3 -m benchmarks.createpath [--quick] [--repeats N] [--out DIR]

Every pod pays two creates through the Python side (its sandbox: checked and passed on;
its app container: environment resolved, warm tree found, spec rewritten). This measures
both, with node.toml's `runc` set to /bin/true so only floxk's own work is timed, for:
  zipapp   the node package's floxk-runc zipapp (floxk/_shimbuild.py), run as the front
           runs it: /usr/bin/python3 -I -S floxk-runc ...
  zipapp+pyc  the same zipapp with .pyc files beside the sources (a proposal, measured)
  source   the same code from this checkout with its __pycache__ (an unpacked install)
  floor    /usr/bin/python3 -I -S -c pass (no Python side can be cheaper)
Rounds interleave the variants. `-X importtime` of one zipapp create per kind is kept in
the JSON (the imports that dominate).
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
from tests.shim.oci import make_bundle, write_node_toml  # noqa: E402

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


_PYC_ZIPAPP = r"""
import io, os, py_compile, sys, tempfile, zipfile
from pathlib import Path
src, out = Path(sys.argv[1]), Path(sys.argv[2])
buf = io.BytesIO(b"#!/usr/bin/env python3\n")
buf.seek(0, io.SEEK_END)
with zipfile.ZipFile(buf, "w") as zf, tempfile.TemporaryDirectory() as tmp:
    zf.writestr("__main__.py", "from shim.runc import main\nmain()\n")
    for p in sorted(src.glob("*.py")):
        zf.writestr(f"shim/{p.name}", p.read_bytes())
        pyc = py_compile.compile(str(p), cfile=f"{tmp}/{p.stem}.pyc", dfile=f"shim/{p.name}",
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        zf.writestr(f"shim/{p.stem}.pyc", Path(pyc).read_bytes())
out.write_bytes(buf.getvalue())
os.chmod(out, 0o755)
"""


def pyc_zipapp(dest: Path) -> Path:
    """A floxk-runc zipapp that also carries bytecode, compiled by the node's python3
    (zipimport reads `mod.pyc` beside `mod.py`; it never writes one): what the packaged
    zipapp would cost if it shipped .pyc files. A measurement of a proposal, not shipped."""
    subprocess.run(
        [PYTHON, "-I", "-S", "-c", _PYC_ZIPAPP, str(common.REPO / "shim"), str(dest)], check=True
    )
    return dest


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

        source = [
            PYTHON, "-I", "-S", "-c",
            f"import sys; sys.path.insert(0, {str(common.REPO)!r}); from shim.runc import main; main()",
        ]  # fmt: skip
        runners = {
            "zipapp": [PYTHON, "-I", "-S", str(bin_dir / "floxk-runc")],
            "zipapp+pyc": [PYTHON, "-I", "-S", str(pyc_zipapp(work / "floxk-runc-pyc"))],
            "source": source,
        }
        cases = {"floor": lambda: _timed_run([PYTHON, "-I", "-S", "-c", "pass"], env)}
        n = [0]

        def case(argv: list[str], bundle: Path, before=None):
            def one() -> float:
                n[0] += 1
                return _timed_run(
                    [*argv, "create", "--bundle", str(bundle), f"c{n[0]}"], env, before
                )

            return one

        for name, argv in runners.items():
            cases[f"{name} sandbox"] = case(argv, sandbox)
            cases[f"{name} app"] = case(argv, app, restore)
        common.note(f"{repeats} interleaved rounds of {len(cases)} cases")
        common.interleaved(cases, 2)  # page cache; the checkout's __pycache__ gets written
        samples = common.interleaved(cases, repeats)
        restore()
        profile = {
            kind: importtime([*runners["zipapp"], "create", "--bundle", str(b), "prof"], env)
            for kind, b in (("sandbox", sandbox), ("app", app))
        }
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
