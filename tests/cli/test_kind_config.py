"""`floxk up --config kind.yaml`: the user's kind Cluster config kept, floxk's node image,
label, mounts and containerd patch added to every node, conflicts named, the spec digest
covering the config. The config floxk renders is what `kind create cluster` reads; the
real-cluster run is tests/k8s/test_apply.py's cluster (a worker node from --config)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
import yaml

from floxk._cluster import kind
from floxk._cluster.spec import ClusterFiles
from shim.core.errors import ConfigError
from tests.cli.conftest import cluster_spec

# Flox's kind demo shape: a worker, a port mapping, a mount, labels, networking.
USER_CONFIG = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: demo
networking:
  podSubnet: 10.250.0.0/16
  serviceSubnet: 10.96.0.0/16
featureGates:
  InPlacePodVerticalScaling: true
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
nodes:
  - role: control-plane
    kubeadmConfigPatches:
      - |
        kind: InitConfiguration
        nodeRegistration:
          kubeletExtraArgs:
            node-labels: "ingress-ready=true"
    extraPortMappings:
      - containerPort: 30080
        hostPort: 8080
        protocol: TCP
  - role: worker
    labels:
      tier: apps
    extraMounts:
      - hostPath: ./data
        containerPath: /data
"""


def _write(tmp_path, text=USER_CONFIG):
    path = tmp_path / "kind.yaml"
    path.write_text(text)
    return path


def _spec(tmp_path, data, name="demo"):
    return cluster_spec(
        ClusterFiles(tmp_path / "kind-demo"),
        name=name,
        workers=kind.node_counts(data)[1],
        restrict_oom_score_adj=False,
        kind_config=kind.canonical(data),
    )


def test_users_config_is_kept_and_every_node_gets_floxks_pieces(tmp_path):
    data = kind.load_user_config(_write(tmp_path), name=None)
    config = yaml.safe_load(kind.config_yaml(_spec(tmp_path, data)))
    assert config["name"] == "demo"
    assert config["networking"] == {"podSubnet": "10.250.0.0/16", "serviceSubnet": "10.96.0.0/16"}
    assert config["featureGates"] == {"InPlacePodVerticalScaling": True}
    cp, worker = config["nodes"]
    assert (cp["role"], worker["role"]) == ("control-plane", "worker")
    assert cp["extraPortMappings"] == [
        {"containerPort": 30080, "hostPort": 8080, "protocol": "TCP"}
    ]
    assert "ingress-ready=true" in cp["kubeadmConfigPatches"][0]
    assert worker["labels"] == {"tier": "apps", "flox.dev/enabled": "true"}
    assert worker["extraMounts"][0] == {
        "hostPath": str((tmp_path / "data").resolve()),  # relative to the config file
        "containerPath": "/data",
    }
    for node in config["nodes"]:
        assert node["image"] == "floxk.local/node:v1.34.4-abc"
        assert node["labels"]["flox.dev/enabled"] == "true"
        paths = [m["containerPath"] for m in node["extraMounts"]]
        assert "/floxk/hub" in paths and "/etc/floxk/node.toml" in paths
    users, ours = config["containerdConfigPatches"]
    assert 'config_path = "/etc/containerd/certs.d"' in users
    flox = tomllib.loads(ours)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert flox["runtimes"]["flox"]["options"]["BinaryName"].endswith("floxk-runc")


def test_without_a_config_the_rendered_cluster_and_digest_are_unchanged(tmp_path):
    spec = cluster_spec(
        ClusterFiles(tmp_path), workers=1, node_image="img", restrict_oom_score_adj=False
    )
    assert "kind_config" not in spec.to_dict()  # digests of clusters made before --config
    assert [n["role"] for n in kind.render_config(spec)["nodes"]] == ["control-plane", "worker"]


def test_the_digest_covers_the_users_config(tmp_path):
    data = kind.load_user_config(_write(tmp_path), name=None)
    a = _spec(tmp_path, data)
    assert (
        a.digest() == _spec(tmp_path, kind.load_user_config(_write(tmp_path), name=None)).digest()
    )
    changed = kind.load_user_config(
        _write(tmp_path, USER_CONFIG.replace("hostPort: 8080", "hostPort: 8081")), name=None
    )
    assert _spec(tmp_path, changed).digest() != a.digest()


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            ("  - role: worker\n", "  - role: worker\n    image: kindest/node:v1.33.0\n"),
            "nodes[1].image",
        ),
        (
            ("      tier: apps\n", "      tier: apps\n      flox.dev/enabled: 'false'\n"),
            "nodes[1].labels.flox.dev/enabled",
        ),
        (
            ("containerPath: /data", "containerPath: /floxk"),
            "nodes[1].extraMounts[0].containerPath /floxk",
        ),
        (
            ("containerPath: /data", "containerPath: /etc/floxk/node.toml"),
            "extraMounts[0].containerPath /etc/floxk/node.toml",
        ),
        (
            (
                'config_path = "/etc/containerd/certs.d"',
                'config_path = "x"\n    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.flox]\n      runtime_type = "io.containerd.runc.v2"',
            ),
            "containerdConfigPatches[0] (configures the flox runtime)",
        ),
    ],
)
def test_a_setting_floxk_owns_is_an_error_naming_it(tmp_path, edit, named):
    text = USER_CONFIG.replace(*edit)
    assert text != USER_CONFIG
    with pytest.raises(ConfigError, match="conflicts with what floxk sets") as e:
        kind.load_user_config(_write(tmp_path, text), name=None)
    assert named in e.value.message


def test_name_and_shape_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"name 'demo' \(--name other\)"):
        kind.load_user_config(_write(tmp_path), name="other")
    assert kind.load_user_config(_write(tmp_path), name="demo")["name"] == "demo"
    with pytest.raises(ConfigError, match="not a kind Cluster config"):
        kind.load_user_config(_write(tmp_path, "kind: Pod\n"), name=None)
    with pytest.raises(ConfigError, match="apiVersion"):
        kind.load_user_config(
            _write(tmp_path, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n"), name=None
        )
    with pytest.raises(ConfigError, match=r"nodes\[0\].role 'master'"):
        kind.load_user_config(
            _write(tmp_path, USER_CONFIG.replace("role: control-plane", "role: master")), name=None
        )


def _floxk(*args, tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "floxk", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_up_refuses_a_conflicting_config_before_building_anything(tmp_path):
    path = _write(
        tmp_path, USER_CONFIG.replace("  - role: worker\n", "  - role: worker\n    image: x\n")
    )
    r = _floxk("up", "--config", str(path), tmp_path=tmp_path)
    assert r.returncode == 1 and "nodes[1].image" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "data").exists()
    r = _floxk("up", "--config", str(_write(tmp_path)), "--workers", "1", tmp_path=tmp_path)
    assert r.returncode == 1 and "--workers and --config" in r.stderr
