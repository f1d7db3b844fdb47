"""The flox runtime table (shim/core/containerd.py) as each containerd line really uses it.

Checked without the product: the runtime_path shim and the BinaryName interposer are
recording pass-throughs (sh scripts that log their call, then exec the line's
containerd-shim-runc-v2 / the host's runc). The pod runs on the flox handler with the plain
busybox image, so what is asserted is only containerd's side of the contract:
- which calls reach the wrapper shim on this line (shim/core/containerd.py: wrapper_shim_starts);
- the interposer gets `create --bundle B` for the sandbox AND the app container, and both
  specs carry the pod's flox.dev/* annotations (pod_annotations), nothing else of the pod's;
- the plain runc handler gets no flox.dev annotations;
- stop/remove leave the node clean.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import grpc
import pytest

from shim.core import containerd as ctrd
from testkit.images import PLAIN_IMAGE

pytestmark = [pytest.mark.cri, pytest.mark.root]

SHIM_RECORDER = """#!/bin/sh
# Records a wrapper-shim call (action = last argument), then becomes the runc-v2 shim.
for last; do :; done
echo "$last" >>{log}
exec {shim} "$@"
"""

RUNC_RECORDER = """#!/bin/sh
# Records each runc call; for `create`, the container type and flox/other annotations of
# the bundle's config.json (compact JSON as containerd writes it). Then becomes runc.
bundle="" action="" prev=""
for arg; do
  case "$prev" in --bundle|-b) bundle="$arg" ;; esac
  case "$arg" in create|start|kill|delete|state|exec|update|pause|resume|ps|features)
    [ -z "$action" ] && action="$arg" ;;
  esac
  prev="$arg"
done
if [ "$action" = create ] && [ -n "$bundle" ]; then
  kind=$(grep -o '"io.kubernetes.cri.container-type":"[a-z]*"' "$bundle/config.json" | cut -d'"' -f4)
  ann=$(grep -o '"\\(flox.dev/[a-z-]*\\|example.com/[a-z-]*\\)":"[^"]*"' "$bundle/config.json" | tr -d '"' | sort | tr '\\n' ' ')
  echo "create $kind $ann" >>{log}
else
  echo "$action" >>{log}
fi
exec {runc} "$@"
"""


def write_script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def recorders(tmp_path, containerd_line, runc_line):
    shim_log, runc_log = tmp_path / "shim.log", tmp_path / "runc.log"
    shim = write_script(
        tmp_path / "containerd-shim-flox-v2",
        SHIM_RECORDER.format(
            log=shlex.quote(str(shim_log)), shim=shlex.quote(str(containerd_line.runc_shim))
        ),
    )
    runc = write_script(
        tmp_path / "floxk-runc",
        RUNC_RECORDER.format(log=shlex.quote(str(runc_log)), runc=shlex.quote(str(runc_line.path))),
    )

    def read(path: Path) -> list[str]:
        return [line.strip() for line in path.read_text().splitlines()] if path.exists() else []

    return shim, runc, lambda: read(shim_log), lambda: read(runc_log)


def run_app(cri, handler: str, annotations: dict[str, str]) -> str:
    pod = cri.run_pod("shape", annotations, runtime_handler=handler)
    cid = cri.create_container(pod, "app", PLAIN_IMAGE, command=["/bin/sh", "-c", "echo app-ran"])
    cri.start(cid)
    assert cri.wait_exit(cid) == 0
    assert cri.logs(cid, contains="app-ran") == "app-ran\n"
    return pod


def test_flox_runtime_shape_on_this_line(start_containerd, containerd_line, recorders):
    shim, runc, shim_calls, runc_calls = recorders
    daemon = start_containerd(flox_shim=shim, flox_runc=runc)
    cri = daemon.cri
    annotations = {"flox.dev/environment": "alice/hello:3", "example.com/other": "x"}

    pod = run_app(cri, "flox", annotations)

    creates = [c for c in runc_calls() if c.startswith("create ")]
    assert creates == [
        "create sandbox flox.dev/environment:alice/hello:3",
        "create container flox.dev/environment:alice/hello:3",
    ]
    starts = shim_calls().count("start")
    expected = {"none": 0, "sandbox": 1, "all": 2}[
        ctrd.wrapper_shim_starts(containerd_line.version)
    ]
    assert starts == expected, f"wrapper shim calls on {containerd_line.version}: {shim_calls()}"

    cri.remove_pod(pod)
    cri.assert_node_clean()
    assert "delete" in runc_calls()  # teardown went through the interposer too


def test_plain_handler_bypasses_flox_runtime(start_containerd, recorders):
    shim, runc, shim_calls, runc_calls = recorders
    daemon = start_containerd(flox_shim=shim, flox_runc=runc)

    pod = run_app(daemon.cri, "", {"flox.dev/environment": "alice/hello"})

    # 2.x introspects every configured runtime at startup (shim `-info` -> `runc features`);
    # no pod work may reach the flox runtime.
    assert [c for c in shim_calls() if c != "-info"] == []
    assert [c for c in runc_calls() if c != "features"] == []
    daemon.cri.remove_pod(pod)
    daemon.cri.assert_node_clean()


def test_restrict_oom_score_adj_matches_host(start_containerd):
    """Without restrict_oom_score_adj, sandboxes start exactly where the host lets runc lower
    oom_score_adj (the probe in shim/core/containerd.py is right, and not vacuous)."""
    daemon = start_containerd(restrict_oom_score_adj=False)
    if ctrd.needs_restrict_oom_score_adj():
        with pytest.raises(grpc.RpcError, match="oom_score_adj|final child's PID"):
            daemon.cri.run_pod("oom", runtime_handler="")
    else:
        daemon.cri.run_pod("oom", runtime_handler="")
    daemon.cri.remove_all()
    daemon.cri.assert_node_clean()
