"""What floxk-runc's create path costs before it execs runc, and where that time goes.

    python3 -m benchmarks.createpath [--quick] [--repeats N] [--out DIR]

Every pod pays two creates through floxk-runc's front: its sandbox's (the sh front finds it
is a sandbox and passes it on) and its app container's (the front hands it to Python:
environment resolved, warm tree found, spec rewritten). This measures both, with the real
runc replaced by /bin/true (front and node.toml) so only floxk's own work is timed:
  front     the node package's sh front (shim/installer/layout.py) and behind it the
            floxk-runc zipapp (floxk/_shimbuild.py, with bytecode), as containerd runs it
  front+server  the same front with the node's create server running (shim.server, as a
            flox sandbox's prefetch leaves it): the create is answered by a fork of it
  zipapp    the zipapp's Python side alone, started the way the front starts it
            (/usr/bin/python3 -I -S -c 'sys.path.insert(0, zipapp); ...')
  source    the same code from this checkout with its __pycache__ (an unpacked install)
  floor     /usr/bin/python3 -I -S -c pass (no Python side can be cheaper)
Rounds interleave the variants. `-X importtime` of one zipapp app create is kept in the
JSON (the imports that remain).
"""

from __future__ import annotations

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
from shim.installer.layout import REAL_RUNC_LINK, SHIM_NAME  # noqa: E402
from shim.installer.render import render_node_front  # noqa: E402
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
        # The same front with the node's create server (shim.server) running, as a flox
        # sandbox's prefetch leaves it: the app create is answered by a fork of it.
        served = bin_dir / "floxk-runc-front-true-served"
        served.write_text(
            render_node_front(str(bin_dir), PYTHON, str(node.state)).replace(
                f"exec {bin_dir}/{REAL_RUNC_LINK} ", "exec /bin/true "
            )
        )
        served.chmod(0o755)
        server = subprocess.Popen(
            front_module.python_argv(PYTHON, "shim.server:main", bin_dir / SHIM_NAME),
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        from shim import server as create_server

        for _ in range(200):
            if create_server.running(node.state):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the create server did not start")
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
        runners = {
            "front": [str(front)], "front+server": [str(served)], "zipapp": zipapp,
            "source": source,
        }  # fmt: skip
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
        cpu: dict[str, list[float]] = {}
        timed_cases = {name: _with_cpu(name, fn, cpu) for name, fn in cases.items()}
        server_pid = create_server.running(node.state)
        server_before = _process_cpu_ms(server_pid)
        samples = common.interleaved(timed_cases, repeats)
        time.sleep(1.5)  # the server reaps its prefetch children within a second
        server_ms = (_process_cpu_ms(server_pid) - server_before) / repeats
        cpu_ms = {name: common.summary([v / 1000 for v in values]) for name, values in cpu.items()}
        restore()
        profile = {"app": importtime([*zipapp, "create", "--bundle", str(app), "prof"], env)}
        create_server.stop(node.state)
        server.wait(timeout=10)
        shutil.rmtree(node.state / "uses", ignore_errors=True)
    return common.result(
        "createpath",
        quick=quick,
        repeats=repeats,
        cases=common.summaries(samples),
        # CPU of the front and what it started (getrusage of reaped children), and for
        # front+server the server's own CPU (its children included) per served create
        cpu=cpu_ms,
        server_cpu_ms_per_create=round(server_ms, 2),
        importtime_zipapp=profile,
    )


def _with_cpu(name: str, fn, into: dict[str, list[float]]):
    import resource

    def one() -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        elapsed = fn()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        into.setdefault(name, []).append(used * 1000)
        return elapsed

    return one


def _process_cpu_ms(pid: int | None) -> float:
    """utime + stime + cutime + cstime of `pid` and of its live descendants (the server's
    warm workers live across requests), in ms."""
    if pid is None:
        return 0.0
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0  # it just left: its CPU is in its parent's cutime now
    total = sum(int(x) for x in fields[11:15]) * 1000 / os.sysconf("SC_CLK_TCK")
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(_process_cpu_ms(int(c)) for c in f.read().split())
        except OSError:
            pass
    return total


def report(doc: dict) -> None:
    common.print_table([common.cell(name, s) for name, s in doc["cases"].items()])
    if "cpu" in doc:
        print("CPU per create (the front and what it started):")
        common.print_table([common.cell(name, s) for name, s in doc["cpu"].items()])
        print(
            f"  + the create server's CPU per served create: {doc['server_cpu_ms_per_create']} ms"
        )
    for kind, rows in doc["importtime_zipapp"].items():
        top = ", ".join(f"{r['module']} {r['cumulative_us'] / 1000:.1f}" for r in rows[:6])
        print(f"zipapp {kind} create, slowest imports (cumulative ms): {top}")


def main() -> int:
    return common.bench_main(__doc__, run, report, common.REPEATS)


if __name__ == "__main__":
    sys.exit(main())
