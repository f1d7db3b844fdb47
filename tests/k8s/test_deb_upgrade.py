"""The .deb on a real node: `dpkg -i` of a newer floxk-shim package with flox pods running.

A kind node (Debian trixie with systemd, dpkg and containerd; cluster floxk-deb, deleted
after) set up the way an operator sets up a Debian node: python3 and nix-bin from apt (the
packages the deployer bundles, through a private flat repository: the node is offline),
`dpkg -i floxk-shim_<old>.deb`, node.toml, `floxk-node install --restart`. Then, with a flox
pod running: `dpkg -i floxk-shim_<new>.deb` (a build of the same sources stamped with
another version, as tests/cri/test_node_upgrade.py makes one), a new pod, a containerd
restart (containerd pins a task's shim path when the task starts and drops the task when
that path no longer resolves on its next start: containerd#14145, #10811), exec and stop of
both pods; `dpkg -r` refused while a flox pod runs, then removing the runtime from
containerd's config and stopping the create server. Marker k8s; run with
`FLOXK_E2E_KIND=1 pytest tests/k8s/test_deb_upgrade.py -m k8s`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tomllib

import pytest

from floxk._cluster.constants import STUB_IMAGE
from floxk._cluster.nodeimage import assets_dir
from floxk._shimbuild import build_deb
from shim.installer.layout import FRONT_NAME, SHIM_FRONT_NAME
from tests.cri.test_node_upgrade import NEW_VERSION, _new_build
from tests.k8s.conftest import hub_kind_cluster, lock_and_push, sh
from tests.k8s.test_node_ops import TICKER, floxk, kubectl, pod_state, until

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_DEB_CLUSTER", "floxk-deb")
NODE = f"{NAME}-control-plane"
LIB = "/usr/lib/floxk"
PYTHON = "/usr/bin/python3.13"  # trixie's python3
FRONTS = (FRONT_NAME, SHIM_FRONT_NAME)
RUNTIME_CLASS = (
    "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: flox\nhandler: flox\n"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with hub_kind_cluster(NAME, tmp_path_factory.mktemp("deb"), "floxk-deb-test-1") as c:
        yield c


def on_node(*argv: str, check: bool = True):
    return sh("docker", "exec", NODE, *argv, check=check)


def node_prerequisites(work) -> None:
    """python3 and nix-bin from apt, as on any Debian node (offline: a flat repository of the
    deployer's bundled packages), and Nix's nix-command."""
    from floxk._deploy import NODE_PACKAGES, fetch_debs, packages_index

    codename = on_node("sh", "-c", ". /etc/os-release && echo $VERSION_CODENAME").stdout.strip()
    repo = work / "repo"
    repo.mkdir()
    for deb in fetch_debs(NODE_PACKAGES, codename, lambda m: print(m, file=sys.stderr)):
        shutil.copyfile(deb, repo / deb.name)
    (repo / "Packages").write_text(packages_index(sorted(repo.glob("*.deb"))))
    sh("docker", "cp", str(repo), f"{NODE}:/root/repo")
    apt = ["-o", "Dir::Etc::SourceList=/root/repo/sources.list", "-o",
           "Dir::Etc::SourceParts=/dev/null", "-o", "Acquire::Languages=none"]  # fmt: skip
    on_node("sh", "-c", "echo 'deb [trusted=yes] file:/root/repo ./' >/root/repo/sources.list")
    on_node("apt-get", *apt, "update", "-qq")
    on_node("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", *apt, "install", "-y", "-q",
            "--no-install-recommends", *NODE_PACKAGES)  # fmt: skip
    on_node("mkdir", "-p", "/etc/nix")
    sh("docker", "cp", str(assets_dir() / "nix.conf"), f"{NODE}:/etc/nix/nix.conf")


def dpkg_install(deb) -> str:
    sh("docker", "cp", str(deb), f"{NODE}:/root/{deb.name}")
    r = on_node("dpkg", "-i", f"/root/{deb.name}")
    return r.stdout + r.stderr


def front(name: str) -> str:
    return on_node("cat", f"{LIB}/{name}").stdout


def flox_runtime() -> dict | None:
    """The flox runtime table as the node's containerd reads its config files now."""
    dump = tomllib.loads(on_node("containerd", "config", "dump").stdout)
    cri = dump["plugins"].get("io.containerd.cri.v1.runtime") or dump["plugins"].get(
        "io.containerd.grpc.v1.cri"
    )
    return cri["containerd"]["runtimes"].get("flox")


def zipapp_version() -> str:
    out = on_node("/usr/bin/python3", "-I", "-S", f"{LIB}/floxk-runc", "--floxk-version").stdout
    return out.split()[1]


def creates() -> dict[str, str]:
    """container id -> the floxk version that created it (the node log's create events)."""
    out = on_node("cat", "/var/lib/floxk/floxk.log").stdout
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {e["container"]: e.get("floxk") for e in events if e["event"] == "create"}


def created_by(name: str, env) -> str:
    cid = pod_state(name, env)["id"].removeprefix("containerd://")
    return creates()[cid]


def ticking(name: str, env) -> None:
    r = floxk("run", "pod", name, "--env", "deb/keep", "--no-wait", "--context",
              f"kind-{NAME}", "--", *TICKER, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=180s", env=env)


def hello(name: str, env) -> str:
    return kubectl("exec", name, "--", "hello", env=env).stdout


def test_deb_upgrade_with_pods_running(cluster, catalog_flake, tmp_path):
    env, work = cluster["env"], cluster["work"]
    old = build_deb(work / "old")
    new = build_deb(work / "new", shim_dir=_new_build(tmp_path))
    assert new.version == NEW_VERSION != old.version

    node_prerequisites(work)
    dpkg_install(old.path)
    (work / "node.toml").write_text(
        f'hubs = ["file://{cluster["hub"]}"]\ntrusted_public_keys = ["{cluster["public"]}"]\n'
    )
    sh("docker", "cp", str(work / "node.toml"), f"{NODE}:/etc/floxk/node.toml")
    # Another python than the package's fronts name (/usr/bin/python3): install renders the
    # front the package shipped again, and the upgrade must not undo that.
    on_node("floxk-node", "install", "--python", PYTHON, "--restart")
    until("containerd back", lambda: on_node("ctr", "version", check=False).returncode == 0)
    sh("kind", "load", "docker-image", STUB_IMAGE, "--name", NAME)
    sh("kubectl", "apply", "-f", "-", env=env, input=RUNTIME_CLASS)
    lock_and_push(work / "keep", "version = 1\n[install]\nhello.pkg-path = \"hello\"\n"
                  'busybox.pkg-path = "busybox"\n', catalog_flake, "--name", "deb/keep",
                  "--to", f"file://{cluster['hub']}", "--signing-key", str(cluster["secret"]),
                  floxk=floxk, env=env)  # fmt: skip

    ticking("keeper", env)
    keeper = pod_state("keeper", env)
    assert created_by("keeper", env) == old.version
    shims = set(on_node("pgrep", "-f", "containerd-shim-runc-v2").stdout.split())

    # The upgrade: dpkg replaces the files at the same paths; nothing else changes.
    config_before = flox_runtime()
    assert config_before
    fronts = {name: front(name) for name in FRONTS}
    assert all(PYTHON in text for text in fronts.values()), fronts
    containerd = on_node("pgrep", "-x", "containerd").stdout
    out = dpkg_install(new.path)
    assert "re-rendering the fronts failed" not in out, out
    assert f"wrote {LIB}/{FRONT_NAME} (front)" in out, out  # dpkg's copy named python3
    assert on_node("dpkg-query", "-W", "-f", "${Version}", "floxk-shim").stdout == new.version
    assert zipapp_version() == new.version
    assert flox_runtime() == config_before
    assert {name: front(name) for name in FRONTS} == fronts  # postinst rendered them again
    assert on_node("pgrep", "-x", "containerd").stdout == containerd  # not restarted
    assert pod_state("keeper", env) == keeper
    assert shims <= set(on_node("pgrep", "-f", "containerd-shim-runc-v2").stdout.split())
    assert hello("keeper", env) == "hello from floxk\n"
    ticking("after", env)
    assert created_by("after", env) == new.version

    # containerd restarted after the upgrade: both pods keep running, exec and logs work.
    on_node("systemctl", "restart", "containerd")
    until("containerd back", lambda: on_node("ctr", "version", check=False).returncode == 0)
    for name in ("keeper", "after"):
        assert pod_state(name, env)["running"]
        assert hello(name, env) == "hello from floxk\n"
    before = kubectl("logs", "keeper", env=env).stdout
    until("new log lines", lambda: len(kubectl("logs", "keeper", env=env).stdout) > len(before))
    assert pod_state("keeper", env) == keeper

    # Removing the package with flox pods running is refused (they would lose exec and
    # stop); the package stays.
    r = on_node("dpkg", "-r", "floxk-shim", check=False)
    assert r.returncode != 0 and "still run on this node" in r.stdout + r.stderr, r.stderr
    status = on_node("dpkg-query", "-W", "-f", "${Status}", "floxk-shim").stdout
    assert status.endswith(" ok installed"), status  # the want flag moves to deinstall
    assert zipapp_version() == new.version and flox_runtime() == config_before
    assert hello("keeper", env) == "hello from floxk\n"

    # Stop works on the pod created before the upgrade and the restart.
    kubectl("delete", "pod", "keeper", "after", "--wait=true", "--timeout=120s", env=env)
    assert not kubectl("get", "pods", "-o", "name", env=env).stdout.strip()
    (server, _) = on_node("cat", "/var/lib/floxk/server/pid").stdout.split()
    assert on_node("test", "-e", f"/proc/{server}", check=False).returncode == 0

    # With no flox pod left (containerd drops a deleted task's directory a moment later),
    # removal takes the runtime out of containerd's config and stops the create server.
    until("no flox task left", lambda: "still running" not in on_node(
        "floxk-node", "uninstall", "--dry-run", "--json").stdout)  # fmt: skip
    on_node("dpkg", "-r", "floxk-shim")
    assert flox_runtime() is None
    assert on_node("test", "-e", LIB, check=False).returncode != 0
    assert on_node("test", "-e", f"/proc/{server}", check=False).returncode != 0
