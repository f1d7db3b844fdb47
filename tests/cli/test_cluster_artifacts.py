"""Generated cluster artifacts: containerd patch (loaded by real containerd), kind config,
node.toml, Dockerfile, k3d files; spec digest; pod filling; `floxk down`/`env push` edges."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from floxk._cluster import debs, k3d, kind, nodecheck, nodeimage, pod
from floxk._cluster.spec import ClusterFiles, ClusterSpec, context_name, parse_context
from shim.core import containerd as ctrd
from shim.core.errors import ConfigError, FloxkError
from shim.core.node import parse_node_config
from testkit import harness
from tests.cli.conftest import cluster_spec

# A kind node's containerd config as every kind release ships it: version 2.
KIND_BASE_CONFIG = """\
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.1"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""


def _line(version_prefix: str) -> harness.Line:
    for line in harness.installed_lines():
        if line.version.startswith(version_prefix):
            return line
    pytest.skip(f"containerd {version_prefix}.x not installed: run scripts/install-containerd.sh")


def _dump(line: harness.Line, config: Path) -> dict:
    out = subprocess.run(
        [str(line.containerd), "--config", str(config), "config", "dump"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tomllib.loads(out)


# --- containerd patch ------------------------------------------------------------------


def test_patch_is_a_version_2_table_under_the_1x_plugin_id():
    patch = tomllib.loads(nodeimage.containerd_patch())
    assert patch["version"] == 2
    flox = patch["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["flox"]
    assert flox["runtime_path"] == nodeimage.SHIM_PATH
    assert flox["options"] == {"BinaryName": nodeimage.RUNC_PATH, "SystemdCgroup": True}
    assert flox["pod_annotations"] == ["flox.dev/*"]
    assert "restrict_oom_score_adj" not in patch["plugins"]["io.containerd.grpc.v1.cri"]


@pytest.mark.parametrize("restrict", [False, True])
def test_kind_merged_patch_loads_in_real_containerd_2(tmp_path, restrict):
    """kind merges the patch into the node's version-2 config; containerd 2.x migrates it and
    must then show the flox runtime with BinaryName under the 2.x plugin id."""
    line = _line("2.")
    merged = ctrd.merge(
        tomllib.loads(KIND_BASE_CONFIG),
        tomllib.loads(nodeimage.containerd_patch(restrict_oom_score_adj=restrict)),
    )
    (tmp_path / "config.toml").write_text(ctrd.to_toml(merged))
    dump = _dump(line, tmp_path / "config.toml")
    runtime = dump["plugins"]["io.containerd.cri.v1.runtime"]
    flox = runtime["containerd"]["runtimes"]["flox"]
    assert flox["options"]["BinaryName"] == nodeimage.RUNC_PATH
    assert flox["runtime_path"] == nodeimage.SHIM_PATH
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert runtime.get("restrict_oom_score_adj", False) is restrict
    assert nodecheck.flox_runtime_in_dump(ctrd.to_toml(dump))["options"]["BinaryName"] == (
        nodeimage.RUNC_PATH
    )


def test_patch_through_imports_loads_in_real_containerd_2(tmp_path):
    line = _line("2.")
    (tmp_path / "flox.toml").write_text(nodeimage.containerd_patch())
    (tmp_path / "config.toml").write_text(
        KIND_BASE_CONFIG.replace(
            "version = 2\n", f'version = 2\nimports = ["{tmp_path}/flox.toml"]\n'
        )
    )
    flox = _dump(line, tmp_path / "config.toml")["plugins"]["io.containerd.cri.v1.runtime"][
        "containerd"
    ]["runtimes"]["flox"]
    assert flox["options"]["BinaryName"] == nodeimage.RUNC_PATH


def test_node_check_finds_no_runtime_in_a_plain_dump():
    assert nodecheck.flox_runtime_in_dump(KIND_BASE_CONFIG) is None
    assert nodecheck.flox_runtime_in_dump("not toml [") is None


# --- kind config, spec -----------------------------------------------------------------


def _spec(**kw) -> ClusterSpec:
    return cluster_spec(ClusterFiles(Path("/home/dev/.local/share/floxk/clusters/kind-dev")), **kw)


def test_kind_config_nodes_image_mounts_patch_labels():
    spec = _spec()
    config = yaml.safe_load(kind.config_yaml(spec))
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["name"] == "dev"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    for node in config["nodes"]:
        assert node["image"] == "floxk.local/node:v1.34.4-abc"
        assert node["labels"] == {"flox.dev/enabled": "true"}
        mounts = {m["containerPath"]: m for m in node["extraMounts"]}
        assert mounts["/floxk/hub"]["hostPath"].endswith("kind-dev/hub")
        assert mounts["/etc/floxk/node.toml"]["readOnly"] is True
    [patch] = config["containerdConfigPatches"]
    assert tomllib.loads(patch)["plugins"]["io.containerd.grpc.v1.cri"]["restrict_oom_score_adj"]
    assert "&id" not in kind.config_yaml(spec)  # no YAML anchors: kind reads plain YAML


def test_spec_digest_is_stable_and_covers_every_field():
    a, b = _spec(), _spec()
    assert a.digest() == b.digest()
    assert _spec(workers=1).digest() != a.digest()
    assert _spec(node_image="floxk.local/node:v1.34.4-def").digest() != a.digest()
    assert _spec(restrict_oom_score_adj=False).digest() != a.digest()


def test_names_and_contexts():
    assert context_name("kind", "dev") == "kind-dev"
    assert parse_context("k3d-a-b") == ("k3d", "a-b")
    assert parse_context("minikube") is None and parse_context(None) is None
    with pytest.raises(ConfigError):
        ClusterSpec(provider="kind", name="Bad_Name")
    with pytest.raises(ConfigError):
        ClusterSpec(provider="minikube", name="ok")


# --- node image recipe ------------------------------------------------------------------


def test_node_toml_parses_and_trusts_the_cluster_key():
    text = nodeimage.render_node_toml(trusted_public_keys=["kind-dev-1:AAAA"])
    cfg = parse_node_config(text)
    assert cfg.hubs == ["file:///floxk/hub"] and cfg.substituters == ["file:///floxk/hub"]
    assert cfg.trusted_public_keys == ["kind-dev-1:AAAA"]


def test_dockerfile_is_classic_and_installs_debs_only_when_needed():
    with_debs = nodeimage.render_dockerfile(
        "kindest/node:v1.34.4", with_debs=True, labels={"a": "b"}
    )
    lines = with_debs.splitlines()
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM kindest/node:v1.34.4"]
    assert not any(line.startswith("# syntax") or "--mount" in line for line in lines)
    assert "apt-get install -y -q --no-install-recommends" in with_debs
    assert f"--output {nodeimage.RUNC_PATH}" in with_debs
    assert 'LABEL a="b"' in with_debs
    without = nodeimage.render_dockerfile("x:1", with_debs=False, labels={})
    assert "dpkg -i" not in without and "COPY debs/" not in without


def test_image_tag_names_base_tag_and_digest():
    assert nodeimage.image_tag("kindest/node:v1.34.4", "0123456789abcdef") == (
        "floxk.local/node:v1.34.4-0123456789ab"
    )
    assert nodeimage.image_tag("localhost:5000/node", "ab" * 8).endswith(":latest-abababababab")


def test_build_context_digest_follows_the_inputs(tmp_path):
    deb = tmp_path / "x_1_all.deb"
    deb.write_bytes(b"1")
    key1, version = nodeimage.write_context(
        tmp_path / "a", base_image="b:1", base_id="sha256:1", debs=[deb]
    )
    key2, _ = nodeimage.write_context(
        tmp_path / "b", base_image="b:1", base_id="sha256:1", debs=[deb]
    )
    key3, _ = nodeimage.write_context(
        tmp_path / "c", base_image="b:1", base_id="sha256:2", debs=[deb]
    )
    assert key1 == key2 != key3
    ctx = tmp_path / "a"
    lib = ctx / "rootfs" / nodeimage.LIB_DIR.lstrip("/")
    for name in ("containerd-shim-flox-v2", "floxk-runc"):
        out = subprocess.run(
            [sys.executable, str(lib / name), "--floxk-version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.split()[0] == name and version.split()[1] in out
    assert (ctx / "debs" / deb.name).exists()
    assert f'dev.floxk.node.inputs="{key1}"' in (ctx / "Dockerfile").read_text()


def test_dpkg_status_and_os_release_parsing():
    status = (
        "Package: python3\nStatus: install ok installed\nVersion: 3.11\n\n"
        "Package: nix-bin\nStatus: deinstall ok config-files\n\n"
        "Package: runc\nStatus: install ok installed\n"
    )
    assert debs.installed_packages(status) == {"python3", "runc"}
    assert debs.os_release_codename("ID=debian\nVERSION_CODENAME=trixie\n") == "trixie"
    with pytest.raises(ConfigError):
        debs.os_release_codename("ID=alpine\nVERSION_ID=3.20\n")


# --- k3d ----------------------------------------------------------------------------------


def test_k3d_template_extends_base_and_loads_in_real_containerd_2(tmp_path):
    text = k3d.render_containerd_template()
    assert text.startswith('{{ template "base" . }}\n')
    # What k3s renders: its base config in place of the template call, its cgroup setting.
    base = 'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd]\n  default_runtime_name = "runc"\n'
    rendered = text.replace('{{ template "base" . }}', base).replace(
        "{{ .SystemdCgroup }}", "false"
    )
    (tmp_path / "config.toml").write_text(rendered)
    flox = _dump(_line("2."), tmp_path / "config.toml")["plugins"]["io.containerd.cri.v1.runtime"][
        "containerd"
    ]["runtimes"]["flox"]
    assert flox["options"] == {"BinaryName": nodeimage.RUNC_PATH, "SystemdCgroup": False}
    assert flox["runtime_path"] == nodeimage.SHIM_PATH


def test_k3d_config_volumes_labels_and_runtime_class():
    spec = _spec(provider="k3d", workers=1)
    config = yaml.safe_load(k3d.config_yaml(spec, runtime_class_file="/tmp/rc.yaml"))
    assert config["apiVersion"] == "k3d.io/v1alpha5" and config["kind"] == "Simple"
    assert config["metadata"]["name"] == "dev" and config["servers"] == 1 and config["agents"] == 1
    vols = {v["volume"].split(":")[1]: v for v in config["volumes"]}
    assert vols["/floxk/hub"]["volume"].endswith(":ro") and vols["/floxk/hub"]["nodeFilters"] == [
        "all"
    ]
    assert vols[f"{k3d.MANIFESTS_DIR}/floxk-runtimeclass.yaml"]["nodeFilters"] == ["server:*"]
    [label] = config["options"]["k3s"]["nodeLabels"]
    assert label["label"] == "flox.dev/enabled=true"
    rc = yaml.safe_load(k3d.runtime_class_manifest())
    assert rc["kind"] == "RuntimeClass" and rc["handler"] == "flox"
    assert spec.containerd_patch == ""  # k3s gets the template, not a kind patch


def test_k3d_dockerfile_carries_k3s_and_the_runtime():
    text = k3d.render_dockerfile("floxk.local/debian:bookworm", labels={})
    assert "COPY k3s /bin/k3s" in text and 'ENTRYPOINT ["/bin/k3s"]' in text
    assert f"--runc {k3d.K3S_RUNC}" in text
    assert f"COPY config-v3.toml.tmpl {k3d.TEMPLATE_PATH}" in text


# --- pods -----------------------------------------------------------------------------------


def test_fill_pod_keeps_what_the_author_wrote():
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team", "annotations": {"x": "y"}},
        "spec": {"containers": [{"name": "a"}, {"name": "b", "image": "busybox:1"}]},
    }
    filled = pod.fill_pod(manifest, env_ref="alice/tools:3")
    assert filled["spec"]["runtimeClassName"] == "flox"
    assert [c["image"] for c in filled["spec"]["containers"]] == ["flox/empty:1.0.0", "busybox:1"]
    assert filled["metadata"]["annotations"] == {"x": "y", "flox.dev/environment": "alice/tools:3"}
    assert filled["metadata"]["namespace"] == "team"
    assert "runtimeClassName" not in manifest["spec"]  # the input is not modified


def test_fill_pod_refuses_missing_or_bad_env():
    with pytest.raises(FloxkError, match="names no environment"):
        pod.fill_pod({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}})
    with pytest.raises(FloxkError):
        pod.fill_pod(
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}},
            env_ref="no slash here",
        )


def test_pod_from_command_runs_to_completion():
    p = pod.pod_from_command("hello", env_ref="alice/hello", command=["hello", "-g", "hi"])
    assert p["spec"]["restartPolicy"] == "Never"
    assert p["spec"]["containers"][0]["command"] == ["hello", "-g", "hi"]
    assert p["metadata"]["annotations"]["flox.dev/environment"] == "alice/hello"


def _v1pod(restart="Never", phase="Pending", **state) -> k8s.V1Pod:
    status = k8s.V1ContainerStatus(
        name="c",
        image="i",
        image_id="",
        ready=False,
        restart_count=0,
        state=k8s.V1ContainerState(**state),
    )
    return k8s.V1Pod(
        spec=k8s.V1PodSpec(containers=[], restart_policy=restart),
        status=k8s.V1PodStatus(phase=phase, container_statuses=[status]),
    )


def test_pod_state_exit_codes_and_fatal_waits():
    done = pod.pod_state(
        _v1pod(
            phase="Failed", terminated=k8s.V1ContainerStateTerminated(exit_code=7, reason="Error")
        )
    )
    assert done.done and done.failed and done.exit_code == 7 and done.started
    ok = pod.pod_state(
        _v1pod(phase="Succeeded", terminated=k8s.V1ContainerStateTerminated(exit_code=0))
    )
    assert ok.done and not ok.failed and ok.exit_code == 0
    stuck = pod.pod_state(
        _v1pod(
            waiting=k8s.V1ContainerStateWaiting(
                reason="RunContainerError", message="environment alice/nope not found"
            )
        )
    )
    assert stuck.done and stuck.failed and not stuck.started
    assert stuck.message == "environment alice/nope not found"
    pending = pod.pod_state(_v1pod(waiting=k8s.V1ContainerStateWaiting(reason="ContainerCreating")))
    assert not pending.done and "ContainerCreating" in pending.summary


def test_load_manifest_wants_one_pod(tmp_path):
    (tmp_path / "two.yaml").write_text("kind: Pod\n---\nkind: Pod\n")
    with pytest.raises(FloxkError, match="exactly one Pod"):
        pod.load_manifest(tmp_path / "two.yaml")


# --- CLI edges ------------------------------------------------------------------------------


def _floxk(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "floxk", *args], capture_output=True, text=True, env=env
    )


def test_down_on_a_missing_cluster_exits_0():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("needs a running Docker Engine: kind asks it which clusters exist")
    r = _floxk("down", "--name", "floxk-test-never-created", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert '"deleted": false' in r.stdout


def test_push_without_to_and_without_a_cluster_says_how(tmp_path):
    import os

    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    env = {
        **os.environ,
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    r = _floxk("env", "push", str(tmp_path), "--name", "alice/x", env=env)
    assert r.returncode == 3, r.stderr
    assert "no floxk dev cluster" in r.stderr and "floxk up" in r.stderr


def test_current_dev_hub_follows_the_context(tmp_path, monkeypatch):
    from floxk._cluster import devhub
    from floxk._cluster.spec import cluster_files

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    files = cluster_files("kind", "dev")
    files.secret_key.parent.mkdir(parents=True)
    files.secret_key.write_text("k")
    hub = devhub.current_dev_hub("kind-dev")
    assert hub.url == f"file://{tmp_path}/floxk/clusters/kind-dev/hub"
    assert hub.signing_key == files.secret_key
    with pytest.raises(FloxkError):
        devhub.current_dev_hub("kind-other")


def test_run_pod_usage_errors_exit_2():
    r = _floxk("run", "pod")
    assert r.returncode == 2 and "give either -f MANIFEST" in r.stderr
    r = _floxk("run", "pod", "p", "--", "true")
    assert r.returncode == 2 and "--env" in r.stderr


def test_up_k3d_says_why_it_is_not_created():
    r = _floxk("up", "--provider", "k3d")
    assert r.returncode == 1
    assert "k3d" in r.stderr and "docs/clusters.md" in r.stderr


def test_doctor_without_a_floxk_cluster_fails_with_fixes(tmp_path):
    import json
    import os

    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig")}
    r = _floxk("doctor", "-o", "json", env=env)
    assert r.returncode in (1, 4), r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is False
    [cluster] = [c for c in report["checks"] if c["check"] == "cluster"]
    assert not cluster["ok"] and "floxk up" in cluster["fix"]


@pytest.mark.parametrize("line_prefix", ["1.7.", "1.6."])
def test_kind_merged_patch_loads_in_real_containerd_1x(tmp_path, line_prefix):
    """Older kind node images run containerd 1.6/1.7 on the same version-2 config."""
    line = _line(line_prefix)
    merged = ctrd.merge(
        tomllib.loads(KIND_BASE_CONFIG), tomllib.loads(nodeimage.containerd_patch())
    )
    (tmp_path / "config.toml").write_text(ctrd.to_toml(merged))
    cri = _dump(line, tmp_path / "config.toml")["plugins"]["io.containerd.grpc.v1.cri"]
    flox = cri["containerd"]["runtimes"]["flox"]
    assert flox["options"]["BinaryName"] == nodeimage.RUNC_PATH
    assert flox["runtime_path"] == nodeimage.SHIM_PATH


def test_default_kubernetes_is_the_first_line_clusters_kind_builds(tmp_path):
    from floxk._cluster import kindimage
    from floxk._cluster.spec import DEFAULT_K8S_VERSION

    lines = kindimage.k8s_lines()
    assert lines[0] == DEFAULT_K8S_VERSION
    for v in lines:  # each line has its wrapper module and image pins
        assert (kindimage.kind_dir() / "k8s" / v / "go.mod").is_file(), v
        assert (kindimage.kind_dir() / "k8s" / v / "images.env").is_file(), v
    env = tmp_path / "versions.env"
    env.write_text("K8S_VERSION=v1\n")
    with pytest.raises(FloxkError, match="sets no K8S_LINES"):
        kindimage.k8s_lines(env)


def test_registry_patch_points_containerd_at_certs_d_and_is_part_of_the_spec():
    from floxk._cluster import registry

    spec, with_registry = _spec(), _spec(registry=True)
    assert spec.digest() != with_registry.digest()  # --registry needs --recreate to add
    patches = kind.render_config(with_registry)["containerdConfigPatches"]
    merged = [tomllib.loads(p) for p in patches]
    config_paths = [
        m["plugins"]["io.containerd.grpc.v1.cri"].get("registry", {}).get("config_path")
        for m in merged
    ]
    assert registry.CERTS_DIR in config_paths
    assert all(m["version"] == 2 for m in merged)  # kind skips a patch of another version
    flox = tomllib.loads(with_registry.containerd_patch)["plugins"]["io.containerd.grpc.v1.cri"]
    assert flox["containerd"]["runtimes"]["flox"]["runtime_type"] == "io.containerd.runc.v2"
    hosts = tomllib.loads(registry.hosts_toml())
    assert hosts["server"] == f"http://{registry.CONTAINER}:5000"
    assert f"http://{registry.CONTAINER}:5000" in hosts["host"]
    hosting = registry.hosting_configmap()
    assert hosting["metadata"] == {"name": "local-registry-hosting", "namespace": "kube-public"}
    assert 'host: "localhost:5001"' in hosting["data"]["localRegistryHosting.v1"]
