"""floxk-runc through its sh front, against the real runc: pass-through, create/exec/delete."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from shim.core.annotations import parse_annotations
from shim.core.node import NodeConfig
from shim.core.spec import rewrite_spec
from shim.front import write_front
from testkit.oci import (
    add_busybox_package,
    make_bundle,
    make_env_tree,
    runc_path,
    write_node_toml,
)


@pytest.fixture
def front(tmp_path):
    return str(write_front(tmp_path / "bin" / "floxk-runc", os.path.realpath(runc_path())))


def _env(tmp_path, **node):
    cfg = write_node_toml(tmp_path / "node.toml", state_dir=str(tmp_path / "state"), **node)
    return {**os.environ, "FLOXK_NODE_CONFIG": str(cfg)}


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_version_passes_through_unchanged(front):
    direct = subprocess.run([runc_path(), "--version"], capture_output=True)
    via = subprocess.run([front, "--version"], capture_output=True)
    assert (via.returncode, via.stdout, via.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )
    assert b"runc version" in via.stdout


def test_python_slow_path_passes_through_too(tmp_path):
    direct = subprocess.run([runc_path(), "--version"], capture_output=True)
    via = subprocess.run(["floxk-runc", "--version"], capture_output=True, env=_env(tmp_path))
    assert (via.returncode, via.stdout) == (direct.returncode, direct.stdout)


def test_global_flags_and_errors_pass_through(front, tmp_path):
    root = str(tmp_path / "runc")
    for args in (
        ["--root", root, "list"],
        ["--root", root, "state", "nope"],
        ["--log-format", "json", "--root", root, "list", "-q"],
    ):
        d = subprocess.run([runc_path(), *args], capture_output=True)
        v = subprocess.run([front, *args], capture_output=True)
        # runc stamps its log lines to the second: two runs may straddle one
        untimed = lambda err: re.sub(rb'time="[^"]*" ', b"", err)  # noqa: E731
        assert (v.returncode, v.stdout, untimed(v.stderr)) == (
            d.returncode, d.stdout, untimed(d.stderr),
        ), args  # fmt: skip


@pytest.mark.root
def test_plain_and_sandbox_containers_are_untouched(front, tmp_path):
    cases = {
        "plain": {},
        "sandbox": {
            "flox.dev/environment": "acme/tools",
            "io.kubernetes.cri.container-type": "sandbox",
        },
        "skipped": {
            "flox.dev/environment": "acme/tools",
            "flox.dev/skip-containers": "sidecar",
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": "sidecar",
        },
    }
    env = _env(tmp_path)  # no hub: any attempt to realize would fail the create
    for name, ann in cases.items():
        bundle = tmp_path / name
        make_bundle(bundle, ["/bin/busybox", "echo", f"{name}-ok"], annotations=ann)
        (bundle / "rootfs" / "bin").mkdir()
        (bundle / "rootfs" / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
        (bundle / "rootfs" / "bin" / "busybox").chmod(0o755)
        before = _digest(bundle / "config.json")
        r = subprocess.run(
            [front, "--root", str(tmp_path / "runc"), "run", "--bundle", str(bundle), f"{name}-{uuid.uuid4().hex[:8]}"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert (r.returncode, r.stdout) == (0, f"{name}-ok\n"), r.stderr
        assert _digest(bundle / "config.json") == before, name


FAILURES = [
    ({"flox.dev/environment": "acme/tools"}, {}, "no hub configured"),
    (
        {"flox.dev/environment": "../../etc"},
        {"hubs": ["file:///nonexistent"]},
        "flox.dev/environment",
    ),
    (
        {"flox.dev/environment": "acme/tools", "flox.dev/nix-mutable": "maybe"},
        {"hubs": ["file:///nonexistent"]},
        "flox.dev/nix-mutable",
    ),
    (
        {"flox.dev/environment": "evil/tools"},
        {"hubs": ["file:///nonexistent"], "policy": {"allowed_owners": ["acme"]}},
        "not allowed",
    ),
]


@pytest.mark.parametrize(("annotations", "node", "reason"), FAILURES)
def test_failed_create_leaves_config_identical_and_logs_json(
    front, tmp_path, annotations, node, reason
):
    bundle = make_bundle(tmp_path / "b", ["hello"], annotations=annotations)
    before = (bundle / "config.json").read_bytes()
    log = tmp_path / "log.json"
    root = str(tmp_path / "runc")
    cid = "f-" + uuid.uuid4().hex[:8]
    r = subprocess.run(
        [front, "--root", root, "--log", str(log), "--log-format", "json", "create", "--bundle", str(bundle), cid],
        capture_output=True, text=True, env=_env(tmp_path, **node), timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert reason in r.stderr
    assert (bundle / "config.json").read_bytes() == before
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"], (
        "no temp file left"
    )
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["level"] == "error" and last["msg"].startswith("floxk: ") and reason in last["msg"]
    assert "time" in last
    assert (
        subprocess.run([runc_path(), "--root", root, "state", cid], capture_output=True).returncode
        != 0
    )


@pytest.mark.nix
@pytest.mark.root
@pytest.mark.parametrize("skip_exec", [False, True])
def test_exec_process_gets_the_env_unless_skip_listed(front, tmp_path, skip_exec):
    store_root = tmp_path / "store"
    pkg = add_busybox_package(store_root, tmp_path)
    env = _env(tmp_path, store_root=str(store_root))
    node = NodeConfig(store_root=store_root, state_dir=tmp_path / "state")
    tree = make_env_tree(node.state_dir, "d" + uuid.uuid4().hex[:8], pkg, vars={"COLOR": "blue"})
    annotations = {
        "flox.dev/environment": "acme/tools",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "app",
    }
    if skip_exec:
        annotations["flox.dev/skip-containers-exec"] = "app"
    bundle = make_bundle(tmp_path / "b", ["sleep", "30"], annotations=annotations)
    spec = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(
        json.dumps(rewrite_spec(spec, tree, node, parse_annotations(annotations)))
    )
    root, cid = str(tmp_path / "runc"), "x-" + uuid.uuid4().hex[:8]
    subprocess.run([runc_path(), "--root", root, "run", "-d", "--bundle", str(bundle), cid],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)  # fmt: skip
    try:
        process = tmp_path / "process.json"
        process.write_text(json.dumps({
            "terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
            "args": ["/run/floxk/env/bin/env"], "env": ["PATH=/usr/bin:/bin", "TERM=xterm"],
        }))  # fmt: skip
        r = subprocess.run([front, "--root", root, "exec", "--process", str(process), cid],
                           capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        seen = dict(line.split("=", 1) for line in r.stdout.splitlines())
        assert seen["TERM"] == "xterm"
        if skip_exec:
            assert "FLOX_ENV" not in seen and seen["PATH"] == "/usr/bin:/bin"
        else:
            assert seen["FLOX_ENV"] == "/run/floxk/env" and seen["COLOR"] == "blue"
            assert seen["PATH"].startswith("/run/floxk/env/bin:")
    finally:
        subprocess.run(
            [front, "--root", root, "delete", "--force", cid], env=env, capture_output=True
        )
    assert (
        subprocess.run([runc_path(), "--root", root, "state", cid], capture_output=True).returncode
        != 0
    )


def _routes(tmp_path):
    """A front whose runc is echo and whose Python side prints 'python' and its argv."""
    slow = ["/bin/sh", "-c", 'echo python "$@"', "slow"]
    return write_front(tmp_path / "routes" / "floxk-runc", "/bin/echo", slow)


def _spec(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(text)
    return path


FLOX = '"flox.dev/environment":"acme/tools"'
ROUTES = [
    ("plain", '{"annotations":{}}', "runc"),
    ("sandbox", '{"annotations":{' + FLOX + ',"io.kubernetes.cri.container-type":"sandbox"}}', "runc"),
    ("spaced sandbox", '{"annotations": {"flox.dev/environment": "a/b",\n "io.kubernetes.cri.container-type" : "sandbox"}}', "runc"),
    ("flox app", '{"annotations":{' + FLOX + ',"io.kubernetes.cri.container-type":"container"}}', "python"),
    ("no container type", '{"annotations":{' + FLOX + "}}", "python"),
    # the sandbox key inside a string value is escaped JSON, not the annotation: still ours
    ("forged", '{"process":{"env":["X=\\"io.kubernetes.cri.container-type\\":\\"sandbox\\""]},"annotations":{' + FLOX + "}}", "python"),
    ("escaped slash", '{"annotations":{"flox.dev\\/environment":"a/b"}}', "python"),
    ("broken json mentioning flox.dev", "{flox.dev", "python"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "route"), ROUTES, ids=[r[0] for r in ROUTES])
@pytest.mark.parametrize("form", ["--bundle B", "-b B", "--bundle=B", "-b=B", "cwd"])
def test_front_routes_creates_by_config_json(tmp_path, name, text, route, form):
    """Sandboxes and plain containers never start Python; flox app containers always do."""
    front = _routes(tmp_path)
    bundle = _spec(tmp_path / "b", text)
    flags = [] if form == "cwd" else form.replace("B", str(bundle)).split()
    argv = [
        str(front),
        "--root",
        "/run/x",
        "--log",
        "/l",
        "create",
        "--pid-file",
        "/p",
        *flags,
        "cid",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=bundle, check=True).stdout
    # argv passed on unchanged, to the real runc or to the Python side
    assert out.split() == (["python"] if route == "python" else []) + argv[1:], out


def test_front_sends_unreadable_specs_exec_and_delete_to_python(tmp_path):
    front = _routes(tmp_path)
    for args, route in (
        (["create", "--bundle", str(tmp_path / "missing"), "c"], "python"),
        (["run", "-d", "--bundle", str(tmp_path / "missing"), "c"], "python"),
        (["exec", "--process", "/p.json", "c"], "python"),
        (["--root", "/r", "delete", "--force", "c"], "python"),
        (["--root", "/r", "state", "c"], "runc"),
        (["start", "create"], "runc"),  # a container named "create" is not the subcommand
    ):
        out = subprocess.run([str(front), *args], capture_output=True, text=True).stdout
        assert out.split() == (["python", *args] if route == "python" else args), args
