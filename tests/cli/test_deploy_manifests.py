"""What `floxk shim deploy` applies, and the installer's apt repository, without a cluster."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from floxk import _deploy


def test_debian_codename_from_os_image():
    assert _deploy.debian_codename("Debian GNU/Linux 12 (bookworm)") == "bookworm"
    assert _deploy.debian_codename("Debian GNU/Linux trixie/sid (trixie)") == "trixie"
    assert _deploy.debian_codename("Ubuntu 24.04.1 LTS") is None
    assert _deploy.debian_codename("") is None


def test_installer_daemonset_runs_privileged_on_labelled_nodes():
    ds = _deploy.daemonset(
        "floxk.local/installer:x", action="install",
        node_selector={"flox.dev/install": "true"}, run_id="r1",
    )  # fmt: skip
    pod = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["namespace"] == "floxk-system"
    assert pod["hostPID"] is True
    assert pod["nodeSelector"] == {"flox.dev/install": "true"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    (c,) = pod["containers"]
    assert c["securityContext"] == {"privileged": True}
    assert c["args"] == ["install"] and c["imagePullPolicy"] == "IfNotPresent"
    assert c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # The selector matches the template: the API server refuses the DaemonSet otherwise.
    sel = ds["spec"]["selector"]["matchLabels"]
    assert sel.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert ds["spec"]["template"]["metadata"]["annotations"] == {_deploy.RUN_ANNOTATION: "r1"}


def test_all_nodes_has_no_selector_and_runs_differ():
    a = _deploy.deploy_objects("img", all_nodes=True, node_toml=None, run_id="a")
    b = _deploy.deploy_objects("img", all_nodes=True, node_toml=None, run_id="b")
    ds = next(o for o in a if o["kind"] == "DaemonSet")
    assert "nodeSelector" not in ds["spec"]["template"]["spec"]
    assert a != b  # a second deploy rolls the pods: every node is checked again


def test_deploy_objects_order_and_node_config():
    objs = _deploy.deploy_objects("img", all_nodes=False, node_toml='hubs = ["x"]\n', run_id="r")
    kinds = [o["kind"] for o in objs]
    assert kinds == [
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "ConfigMap", "DaemonSet", "RuntimeClass",
    ]  # fmt: skip
    ns = objs[0]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    role = objs[2]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    assert objs[4]["data"] == {"node.toml": 'hubs = ["x"]\n'}
    rc = objs[-1]
    assert rc["handler"] == "flox" and rc["scheduling"]["nodeSelector"] == {
        "flox.dev/enabled": "true"
    }
    assert "ConfigMap" not in [
        o["kind"] for o in _deploy.deploy_objects("i", all_nodes=False, node_toml=None, run_id="r")
    ]


def test_bad_node_toml_is_refused():
    from shim.errors import ConfigError

    with pytest.raises(ConfigError):
        _deploy.check_node_toml("hubs = [")


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="dpkg-deb (Debian's dpkg) not installed")
def test_packages_index_describes_each_deb(tmp_path):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: floxk-probe\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: t <t@example.org>\nDescription: probe\n"
    )
    deb = tmp_path / "floxk-probe_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)  # fmt: skip
    index = _deploy.packages_index([deb])
    assert "Package: floxk-probe\n" in index
    assert f"Filename: ./{deb.name}\n" in index
    assert f"SHA256: {hashlib.sha256(deb.read_bytes()).hexdigest()}\n" in index
    release = _deploy.release_file(index)
    assert hashlib.sha256(index.encode()).hexdigest() in release


def _agent():
    path = _deploy.recipe_dir() / "agent.py"
    spec = importlib.util.spec_from_file_location("floxk_installer_agent", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_agent_payload_carries_the_operator_node_toml(tmp_path, monkeypatch):
    import io
    import tarfile

    agent = _agent()
    payload = tmp_path / "host"
    (payload / "bin").mkdir(parents=True)
    (payload / "node.sh").write_text("#!/bin/sh\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "node.toml").write_text("hubs = []\n")
    conf = tmp_path / "node.toml"  # as a ConfigMap volume has it: a symlink
    conf.symlink_to("data/node.toml")
    monkeypatch.setattr(agent, "PAYLOAD", payload)
    monkeypatch.setattr(agent, "NODE_CONFIG", conf)
    with tarfile.open(fileobj=io.BytesIO(agent.payload_tar())) as tar:
        names = set(tar.getnames())
        assert tar.extractfile("./node.toml").read() == b"hubs = []\n"
    assert {"./node.sh", "./bin", "./node.toml"} <= names
    monkeypatch.setattr(agent, "NODE_CONFIG", tmp_path / "absent")
    with tarfile.open(fileobj=io.BytesIO(agent.payload_tar())) as tar:
        assert "./node.toml" not in tar.getnames()


def test_node_script_parses():
    assert subprocess.run(["sh", "-n", str(_deploy.recipe_dir() / "node.sh")]).returncode == 0
    assert Path(_deploy.recipe_dir() / "Dockerfile").read_text().startswith("#")
