"""The installer's pieces without a cluster: its apt repository, the agent, node.sh and the
node-side check of node.toml. The objects deploy applies: tests/cli/test_chart.py."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from floxk import _deploy


def test_debian_codename_from_os_image():
    assert _deploy.debian_codename("Debian GNU/Linux 12 (bookworm)") == "bookworm"
    assert _deploy.debian_codename("Debian GNU/Linux trixie/sid (trixie)") == "trixie"
    assert _deploy.debian_codename("Ubuntu 24.04.1 LTS") is None
    assert _deploy.debian_codename("") is None


def test_bad_node_toml_is_refused():
    from shim.core.errors import ConfigError

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


class FakeNodes:
    """Stands in for the API server's node objects (no kube-apiserver runs in unit tests):
    the agent's api() GETs and merge-PATCHes them; `on_removing` plays the uninstallers."""

    def __init__(self, labels: dict[str, dict], on_removing):
        self.nodes = {n: {"metadata": {"name": n, "labels": dict(v), "annotations": {}}}
                      for n, v in labels.items()}  # fmt: skip
        self.on_removing = on_removing

    def __call__(self, path, *, method="GET", body=None):
        if method == "PATCH":
            meta = self.nodes[path.rsplit("/", 1)[1]]["metadata"]
            for part in ("labels", "annotations"):
                for k, v in body["metadata"].get(part, {}).items():
                    meta[part].pop(k, None) if v is None else meta[part].__setitem__(k, v)
            return {}
        assert path.startswith("/api/v1/nodes?labelSelector=flox.dev%2Fshim")
        for n in self.nodes.values():
            if n["metadata"]["labels"].get("flox.dev/shim") == "removing":
                self.on_removing(n["metadata"])
        return {
            "items": [n for n in self.nodes.values() if "flox.dev/shim" in n["metadata"]["labels"]]
        }


def test_uninstall_all_marks_every_floxk_node_and_waits(monkeypatch):
    agent = _agent()
    monkeypatch.setattr(agent.time, "sleep", lambda _s: None)

    def uninstaller(meta):  # what agent.py uninstall does when done
        meta["labels"].pop("flox.dev/shim")

    fake = FakeNodes({
        "a": {"flox.dev/shim": "provisioned", "flox.dev/enabled": "true"},
        "b": {"flox.dev/shim": "failed"},
        "c": {"other": "x"},
    }, uninstaller)  # fmt: skip
    monkeypatch.setattr(agent, "api", fake)
    assert agent.uninstall_all(30) == 0
    assert fake.nodes["a"]["metadata"]["labels"] == {}
    assert fake.nodes["c"]["metadata"]["labels"] == {"other": "x"}  # never a floxk node


def test_uninstall_all_fails_naming_the_node(monkeypatch, capsys):
    agent = _agent()
    monkeypatch.setattr(agent.time, "sleep", lambda _s: None)

    def uninstaller(meta):
        if meta["name"] == "bad":
            meta["labels"]["flox.dev/shim"] = "failed"
            meta["annotations"]["flox.dev/shim-message"] = "node.sh uninstall exited 1: boom"
        else:
            meta["labels"].pop("flox.dev/shim")

    fake = FakeNodes({"ok": {"flox.dev/shim": "provisioned"},
                      "bad": {"flox.dev/shim": "provisioned"}}, uninstaller)  # fmt: skip
    monkeypatch.setattr(agent, "api", fake)
    assert agent.uninstall_all(30) == 1
    assert "node bad failed: node.sh uninstall exited 1: boom" in capsys.readouterr().err
    # A node nobody uninstalls: the Job gives up after its timeout, naming it.
    fake = FakeNodes({"lost": {"flox.dev/shim": "provisioned"}}, lambda meta: None)
    monkeypatch.setattr(agent, "api", fake)
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(agent.time, "monotonic", lambda: next(clock))
    assert agent.uninstall_all(100) == 1
    assert "not uninstalled after 100 s: lost=removing" in capsys.readouterr().err


def check_node_toml(tmp_path, text: str):
    """check-node-toml.py as node.sh runs it, against this checkout's shim/ (the zipapp's)."""
    conf = tmp_path / "node.toml"
    conf.write_text(text)
    script = _deploy.recipe_dir() / "check-node-toml.py"
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-I", "-S", str(script), str(root), str(conf)],
                          capture_output=True, text=True)  # fmt: skip


KEY = "k-1:" + __import__("base64").b64encode(bytes(32)).decode()


def test_node_check_accepts_what_works_here(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    r = check_node_toml(tmp_path, f'hubs = ["file://{hub}", "https://hub.test"]\n'
                        f'substituters = ["s3://bucket"]\ntrusted_public_keys = ["{KEY}"]\n')  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            'hubs = ["file:///nonexistent/floxk-hub"]\n',
            "hubs[0] file:///nonexistent/floxk-hub: no such directory on this node",
        ),
        ('hubs = ["ftp://hub.test"]\n', "is not file://, http:// or https://"),
        (f'trusted_public_keys = ["{KEY[:-4]}"]\n', "trusted_public_keys[0]"),
        ('hubz = ["https://hub.test"]\n', "unknown key hubz"),
        ("[policy]\nallow_nix_mutable = 1\n", "policy.allow_nix_mutable must be true or false"),
        ("hubs = [", "not valid TOML"),
    ],
)
def test_node_check_refuses_with_the_key(tmp_path, text, needle):
    r = check_node_toml(tmp_path, text)
    assert r.returncode == 1
    assert needle in r.stderr, r.stderr


def test_merge_usr_links_what_only_usr_has(tmp_path):
    # trixie's libc6: the loader only under usr/lib64; bookworm's: /lib64 itself.
    (tmp_path / "usr" / "lib64").mkdir(parents=True)
    (tmp_path / "usr" / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "usr" / "lib").mkdir()
    _deploy.merge_usr(tmp_path)
    assert (tmp_path / "lib64").readlink() == Path("usr/lib64")
    assert (tmp_path / "bin").readlink() == Path("usr/bin")
    assert (tmp_path / "lib").is_dir() and not (tmp_path / "lib").is_symlink()
    assert not (tmp_path / "sbin").exists()  # nothing under usr/sbin: no dangling link
