"""containerd-shim-flox-v2: exec of the real runc-v2 shim with argv/stdio unchanged, plus prefetch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from shim.core.tree import tree_link
from shim.wrapper import action_of, sandbox_env_ref
from testkit.oci import write_node_toml

RUNC_V2 = shutil.which("containerd-shim-runc-v2")
needs_runc_v2 = pytest.mark.skipif(RUNC_V2 is None, reason="needs containerd-shim-runc-v2 on PATH")


def test_action_is_found_after_go_style_flags():
    argv = ["-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/bin/c",
            "-id", "abc", "-debug", "start"]  # fmt: skip
    assert action_of(argv) == "start"
    assert action_of(["--namespace=x", "-bundle", "/b", "delete"]) == "delete"
    assert action_of(["-v"]) is None


def test_only_sandboxes_with_the_annotation_prefetch(tmp_path):
    def ref_for(annotations):
        (tmp_path / "config.json").write_text(json.dumps({"annotations": annotations}))
        return sandbox_env_ref(tmp_path)

    sandbox = {"io.kubernetes.cri.container-type": "sandbox"}
    assert str(ref_for({**sandbox, "flox.dev/environment": "acme/tools:3"})) == "acme/tools:3"
    assert ref_for(sandbox) is None
    assert (
        ref_for({"io.kubernetes.cri.container-type": "container", "flox.dev/environment": "a/b"})
        is None
    )


@needs_runc_v2
@pytest.mark.parametrize(
    "argv", [["-v"], ["-namespace", "t", "-address", "/nonexistent.sock", "-id", "x", "delete"]]
)
def test_argv_stdout_stderr_and_exit_code_pass_through(tmp_path, argv):
    env = {
        **os.environ,
        "FLOXK_NODE_CONFIG": str(
            write_node_toml(tmp_path / "n.toml", state_dir=str(tmp_path / "s"))
        ),
    }
    direct = subprocess.run([RUNC_V2, *argv], capture_output=True, cwd=tmp_path, timeout=60)
    via = subprocess.run(
        ["containerd-shim-flox-v2", *argv], capture_output=True, cwd=tmp_path, env=env, timeout=60
    )
    assert via.returncode == direct.returncode
    assert via.stdout == direct.stdout
    # runc-v2's info lines carry timestamps and pids and race its exit; its last line does not.
    assert _without_shim_logs(via.stderr) == _without_shim_logs(direct.stderr)


def _without_shim_logs(stderr: bytes) -> list[bytes]:
    """stderr's own lines: runc-v2 may or may not get its asynchronous `time=... level=info
    msg="starting signal loop"` log out before it exits, even glued to the previous line."""
    import re

    return [
        ln for ln in re.sub(rb'time="[^"]*" level=\w+ msg=[^\n]*', b"", stderr).splitlines() if ln
    ]


@needs_runc_v2
def test_sandbox_start_spawns_a_detached_prefetch_and_never_fails_because_of_it(tmp_path):
    """Here the prefetch fails (no hub): the failure lands in the node log, start goes on."""
    log = tmp_path / "floxk.log"
    cfg = write_node_toml(tmp_path / "n.toml", state_dir=str(tmp_path / "s"), log_file=str(log))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {
        "io.kubernetes.cri.container-type": "sandbox", "flox.dev/environment": "acme/tools"}}))  # fmt: skip
    argv = ["-namespace", "t", "-address", "/nonexistent.sock", "-id", "x", "start"]
    env = {**os.environ, "FLOXK_NODE_CONFIG": str(cfg)}
    direct = subprocess.run([RUNC_V2, *argv], capture_output=True, cwd=bundle, timeout=60)
    via = subprocess.run(
        ["containerd-shim-flox-v2", *argv], capture_output=True, cwd=bundle, env=env, timeout=60
    )
    assert (via.returncode, via.stdout) == (direct.returncode, direct.stdout)
    for _ in range(100):
        if log.exists() and "failed" in log.read_text():
            break
        time.sleep(0.05)
    text = log.read_text()
    assert "prefetch acme/tools: started" in text
    assert "prefetch acme/tools: failed" in text and "no hub configured" in text


@pytest.mark.nix
@pytest.mark.root
@needs_runc_v2
@pytest.mark.parametrize("shim", ["python wrapper", "sh front"])
def test_prefetch_realizes_the_env_before_any_container(tmp_path, shim):
    from e2e.catalog import prepare
    from floxk._lock import lock_environment
    from floxk._push import push_environment
    from shim.core.nix import base_options

    catalog = prepare(tmp_path / "catalog")
    subprocess.run(
        [
            "nix-store",
            *base_options(),
            "--generate-binary-cache-key",
            "k-1",
            tmp_path / "sk",
            tmp_path / "pk",
        ],
        check=True,
    )
    d = tmp_path / "env"
    d.mkdir()
    (d / "manifest.toml").write_text('version = 1\n[install]\nhello.pkg-path = "hello"\n')
    lock_environment(d, catalog=catalog)
    pushed = push_environment(
        d, to=f"file://{tmp_path / 'cache'}", name="acme/pre", signing_key=tmp_path / "sk"
    )
    state = tmp_path / "state"
    cfg = write_node_toml(
        tmp_path / "n.toml", hubs=[f"file://{tmp_path / 'cache'}"], trusted_public_keys=[(tmp_path / "pk").read_text().strip()],
        state_dir=str(state), store_root=str(tmp_path / "store"),
    )  # fmt: skip
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {
        "io.kubernetes.cri.container-type": "sandbox", "flox.dev/environment": "acme/pre"}}))  # fmt: skip
    argv = ["-namespace", "t", "-address", "/nonexistent.sock", "-id", "x", "start"]
    command = "containerd-shim-flox-v2" if shim == "python wrapper" else _shim_front(tmp_path)
    subprocess.run([command, *argv], capture_output=True, cwd=bundle,
                   env={**os.environ, "FLOXK_NODE_CONFIG": str(cfg)}, timeout=60)  # fmt: skip
    tree = state / "envs" / pushed.digest
    log = state / "floxk.log"
    for _ in range(600):  # the prefetch logs "ready" just after the tree is in place
        if (tree / "activation.json").exists() and "ready " in (
            log.read_text() if log.exists() else ""
        ):
            break
        time.sleep(0.05)
    assert (tree / "activation.json").exists(), (state / "floxk.log").read_text()
    link = "bin" if (tree / "bin").is_symlink() else "bin/hello"
    assert tree_link(tree, link).startswith("/nix/store/")
    assert "ready " + pushed.digest in (state / "floxk.log").read_text()
    assert Path(tmp_path / "store" / "nix" / "store").is_dir()


def _shim_front(tmp_path, prefetch=None):
    from shim.front import python_argv, write_shim_front

    prefetch = prefetch or python_argv(entry="shim.wrapper:prefetch_main")
    return str(write_shim_front(tmp_path / "bin" / "containerd-shim-flox-v2", RUNC_V2, prefetch))


@needs_runc_v2
@pytest.mark.parametrize(
    "argv", [["-v"], ["-namespace", "t", "-address", "/nonexistent.sock", "-id", "x", "delete"]]
)
def test_sh_front_passes_argv_stdout_and_exit_code_through(tmp_path, argv):
    front = _shim_front(tmp_path)
    direct = subprocess.run([RUNC_V2, *argv], capture_output=True, cwd=tmp_path, timeout=60)
    via = subprocess.run([front, *argv], capture_output=True, cwd=tmp_path, timeout=60)
    assert (via.returncode, via.stdout) == (direct.returncode, direct.stdout)
    assert _without_shim_logs(via.stderr) == _without_shim_logs(direct.stderr)


@needs_runc_v2
def test_sh_front_prefetches_for_flox_sandboxes_only(tmp_path):
    """The front starts the Python prefetch (here it fails: no hub, and says so in the
    node log) for a flox sandbox's start, and nothing for other bundles."""
    log = tmp_path / "floxk.log"
    cfg = write_node_toml(tmp_path / "n.toml", state_dir=str(tmp_path / "s"), log_file=str(log))
    env = {**os.environ, "FLOXK_NODE_CONFIG": str(cfg)}
    marks = tmp_path / "marks"
    marks.mkdir()
    recorder = ["/bin/sh", "-c", f'touch {marks}/"$(basename "$PWD")"']
    bundles = {
        "sandbox": {"io.kubernetes.cri.container-type": "sandbox", "flox.dev/environment": "acme/tools"},
        "app": {"io.kubernetes.cri.container-type": "container", "flox.dev/environment": "acme/tools"},
        "plain": {"io.kubernetes.cri.container-type": "sandbox"},
    }  # fmt: skip
    argv = ["-namespace", "t", "-address", "/nonexistent.sock", "-id", "x", "start"]
    for name, spec_annotations in bundles.items():
        bundle = tmp_path / name
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps({"annotations": spec_annotations}))
        for front in (_shim_front(tmp_path / "real"), _shim_front(tmp_path / "rec", recorder)):
            direct = subprocess.run([RUNC_V2, *argv], capture_output=True, cwd=bundle, timeout=60)
            via = subprocess.run(
                [front, *argv], capture_output=True, cwd=bundle, env=env, timeout=60
            )
            assert (via.returncode, via.stdout) == (direct.returncode, direct.stdout)
    for _ in range(200):
        if (marks / "sandbox").exists() and log.exists() and "failed" in log.read_text():
            break
        time.sleep(0.05)
    text = log.read_text()
    assert "prefetch acme/tools: started" in text
    assert "prefetch acme/tools: failed" in text and "no hub configured" in text
    assert sorted(p.name for p in marks.iterdir()) == ["sandbox"]


@needs_runc_v2
def test_sh_front_answers_floxk_version_from_the_zipapp(tmp_path):
    from floxk._shimbuild import build_zipapps
    from shim.front import render_shim_front

    build_zipapps(tmp_path / "lib")
    zipapp = str(tmp_path / "lib" / "containerd-shim-flox-v2")
    front = tmp_path / "front"
    front.write_text(render_shim_front(RUNC_V2, None, ["/usr/bin/python3", "-I", "-S", zipapp]))
    front.chmod(0o755)
    out = subprocess.run([str(front), "--floxk-version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("containerd-shim-flox-v2 ")
