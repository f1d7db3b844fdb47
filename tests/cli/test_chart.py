"""The Helm chart clusters/helm/floxk-node, rendered by the real helm (`helm template`).

deploy, undeploy and `floxk shim manifests` render the same chart, so these tests cover
what every path applies. helm is built by clusters/helm/build-tools.sh (install-system.sh).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import yaml

from floxk import _deploy
from shim.core.errors import CommandError, NotFoundError
from shim.core.node import parse_node_config

try:
    HELM = _deploy.find_helm()
except NotFoundError:
    HELM = None
pytestmark = pytest.mark.skipif(
    HELM is None, reason="helm not built: bash clusters/helm/build-tools.sh"
)

KEY = "floxk-test-1:" + base64.b64encode(bytes(range(32))).decode()


def by_kind(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, [(o["kind"], o["metadata"]["name"]) for o in objects]
    return found[0]


def pod_of(ds):
    return ds["spec"]["template"]["spec"]


def render_fails(values) -> str:
    with pytest.raises(CommandError) as e:
        _deploy.render(values)
    return e.value.output


def test_default_objects_and_install_order():
    objects = _deploy.render({})
    release = [(o["kind"], o["metadata"]["name"]) for o in objects if not _deploy.is_hook(o)]
    assert release == [
        ("ServiceAccount", "floxk-installer"),
        ("ConfigMap", "floxk-node-config"),
        ("ClusterRole", "floxk-installer"),
        ("ClusterRoleBinding", "floxk-installer"),
        ("DaemonSet", "floxk-installer"),
        ("RuntimeClass", "flox"),
    ]
    rc = by_kind(objects, "RuntimeClass")
    assert rc["handler"] == "flox"
    assert rc["scheduling"] == {"nodeSelector": {"flox.dev/enabled": "true"}}
    role = by_kind(objects, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]}
    ]
    # No settings given: the ConfigMap carries no node.toml, so nodes keep their own.
    assert "data" not in by_kind(objects, "ConfigMap")
    # helm install --create-namespace owns the namespace; the chart does not by default.
    assert "Namespace" not in [o["kind"] for o in objects]


def test_installer_daemonset():
    ds = by_kind(_deploy.render({}), "DaemonSet", "floxk-installer")
    assert ds["metadata"]["namespace"] == "floxk-system"
    pod = pod_of(ds)
    assert pod["hostPID"] is True and pod["serviceAccountName"] == "floxk-installer"
    assert pod["nodeSelector"] == {"flox.dev/install": "true"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    (c,) = pod["containers"]
    assert c["image"] == "floxk.local/installer:0.1.0"  # the chart's appVersion
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["securityContext"] == {"privileged": True}
    assert c["args"] == ["install"]
    assert c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # Ready only once the node is provisioned: a rollout stops at a node that refuses.
    assert c["readinessProbe"]["exec"]["command"][-1] == "ready"
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1}
    sel = ds["spec"]["selector"]["matchLabels"]
    assert sel.items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_image_values_reach_every_pod():
    values = {
        "image": {"repository": "registry.test:5000/floxk/installer", "tag": "9.9",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
    }  # fmt: skip
    objects = _deploy.render(values)
    pods = [pod_of(o) for o in objects if o["kind"] in ("DaemonSet", "Job")]
    assert len(pods) == 3  # installer, uninstaller, uninstall Job
    for pod in pods:
        (c,) = pod["containers"]
        assert c["image"] == "registry.test:5000/floxk/installer:9.9"
        assert c["imagePullPolicy"] == "Always"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_node_selector_and_tolerations():
    objects = _deploy.render(
        {"nodeSelector": {"pool": "flox"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}
    )
    pod = pod_of(by_kind(objects, "DaemonSet", "floxk-installer"))
    assert pod["nodeSelector"] == {"pool": "flox"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    pod = pod_of(by_kind(_deploy.render({"allNodes": True}), "DaemonSet", "floxk-installer"))
    assert "nodeSelector" not in pod
    # The uninstaller goes wherever the installer went, whatever the selector says now.
    un = pod_of(by_kind(objects, "DaemonSet", "floxk-uninstaller"))
    assert un["nodeSelector"] == {"flox.dev/shim": "removing"}


def test_node_settings_become_a_node_toml_the_node_reads():
    values = {
        "node": {
            "hubs": ["https://hub.test/floxk?a=1&b=2", "file:///srv/hub"],
            "substituters": ["https://cache.test"],
            "trustedPublicKeys": [KEY],
            "policy": {"allowedOwners": ["acme", "ops"], "allowNixMutable": True},
        }
    }
    cm = by_kind(_deploy.render(values), "ConfigMap")
    cfg = parse_node_config(cm["data"]["node.toml"])
    assert cfg.hubs == ["https://hub.test/floxk?a=1&b=2", "file:///srv/hub"]
    assert cfg.substituters == ["https://cache.test"]
    assert cfg.trusted_public_keys == [KEY]
    assert cfg.policy.allowed_owners == ["acme", "ops"] and cfg.policy.allow_nix_mutable is True
    # Only hubs: substituters default to the hubs, policy to its defaults.
    cm = by_kind(_deploy.render({"node": {"hubs": ["file:///srv/hub"]}}), "ConfigMap")
    cfg = parse_node_config(cm["data"]["node.toml"])
    assert cfg.substituters == ["file:///srv/hub"] and cfg.policy.allow_nix_mutable is False


def test_whole_node_toml_keeps_its_bytes():
    text = '# ours\nhubs = ["file:///srv/hub"]  # trailing\n\n\nstate_dir = "/var/lib/x"\n\n'
    cm = by_kind(_deploy.render({"node": {"toml": text}}), "ConfigMap")
    assert cm["data"]["node.toml"] == text
    out = render_fails({"node": {"toml": text, "hubs": ["file:///srv/hub"]}})
    assert "exclude each other" in out


def test_new_node_settings_roll_the_daemonset_same_ones_do_not():
    def annotations(values):
        ds = by_kind(_deploy.render(values), "DaemonSet", "floxk-installer")
        return ds["spec"]["template"]["metadata"]["annotations"]

    a = annotations({"node": {"hubs": ["file:///srv/a"]}})
    assert a == annotations({"node": {"hubs": ["file:///srv/a"]}})
    assert a != annotations({"node": {"hubs": ["file:///srv/b"]}})
    assert a != annotations(
        {"node": {"hubs": ["file:///srv/a"]}, "hubCredentials": {"secretName": "s"}}
    )
    assert annotations({"rolloutId": "r1"}) != annotations({"rolloutId": "r2"})


def test_hub_credentials_secret_is_mounted_for_the_agent():
    ds = by_kind(_deploy.render({"hubCredentials": {"secretName": "hub-netrc"}}), "DaemonSet",
                 "floxk-installer")  # fmt: skip
    pod = pod_of(ds)
    vol = next(v for v in pod["volumes"] if v["name"] == "hub-credentials")
    assert vol["secret"] == {
        "secretName": "hub-netrc",
        "items": [{"key": "netrc", "path": "netrc"}],
    }
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "hub-credentials")
    agent = _agent()
    assert mount["mountPath"] == str(agent.NETRC.parent) and mount["readOnly"] is True
    default = pod_of(by_kind(_deploy.render({}), "DaemonSet", "floxk-installer"))
    assert "hub-credentials" not in [v["name"] for v in default["volumes"]]


def test_uninstall_hook():
    objects = _deploy.render({"uninstall": {"timeoutSeconds": 100}})
    hooks = [o for o in objects if _deploy.is_hook(o)]
    assert [(o["kind"], o["metadata"]["name"]) for o in hooks] == [
        ("DaemonSet", "floxk-uninstaller"),
        ("Job", "floxk-uninstall"),
    ]
    for o in hooks:
        anns = o["metadata"]["annotations"]
        assert anns["helm.sh/hook"] == "pre-delete"
        assert "hook-succeeded" in anns["helm.sh/hook-delete-policy"]
    ds, job = hooks
    # The DaemonSet is in place before the Job marks nodes `removing`.
    assert int(ds["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert pod_of(ds)["containers"][0]["args"] == ["uninstall"]
    (c,) = pod_of(job)["containers"]
    assert c["args"] == ["uninstall-all", "--timeout", "100"]
    assert job["spec"]["activeDeadlineSeconds"] > 100 and job["spec"]["backoffLimit"] == 0


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"node": {"hubs": "file:///srv/hub"}}, "hubs"),
        ({"node": {"hubs": ["/srv/hub"]}}, "hubs"),
        ({"node": {"trustedPublicKeys": ["no-colon"]}}, "trustedPublicKeys"),
        ({"node": {"policy": {"allowNixMutable": "yes"}}}, "allowNixMutable"),
        ({"node": {"hub": ["file:///srv/hub"]}}, "hub"),
        ({"nodeSelektor": {}}, "nodeSelektor"),
    ],
)
def test_schema_refuses_bad_values(values, needle):
    out = render_fails(values)
    assert "values don't meet the specifications of the schema" in out, out
    assert needle in out


def test_helm_lint_strict():
    r = subprocess.run([HELM, "lint", "--strict", str(_deploy.chart_dir())],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 chart(s) failed" in r.stdout


def test_deploy_applies_the_chart():
    objs = _deploy.deploy_objects(
        "registry.test:5000/floxk/installer:1.2", all_nodes=False, node_toml='hubs = ["x"]\n',
        run_id="r",
    )  # fmt: skip
    kinds = [o["kind"] for o in objs]
    assert kinds == [
        "Namespace", "ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding",
        "DaemonSet", "RuntimeClass",
    ]  # fmt: skip
    ns = objs[0]
    assert ns["metadata"]["name"] == "floxk-system"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert objs[2]["data"] == {"node.toml": 'hubs = ["x"]\n'}
    (c,) = pod_of(objs[5])["containers"]
    assert c["image"] == "registry.test:5000/floxk/installer:1.2"
    assert not any(_deploy.is_hook(o) for o in objs)
    every = _deploy.deploy_objects("i:1", all_nodes=True, node_toml=None, run_id="a")
    ds = by_kind(every, "DaemonSet")
    assert "nodeSelector" not in pod_of(ds)
    assert "data" not in by_kind(every, "ConfigMap")
    assert every != _deploy.deploy_objects("i:1", all_nodes=True, node_toml=None, run_id="b")


def test_manifests_cli_prints_plain_yaml(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"node": {"hubs": ["file:///srv/hub"]}}))
    env_argv = [sys.executable, "-m", "floxk", "shim", "manifests", "--image", "r.test/i:1"]
    r = subprocess.run([*env_argv, "-f", str(values)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    objects = list(yaml.safe_load_all(r.stdout))
    assert objects == _deploy.manifests("r.test/i:1", value_files=[values])
    assert objects[0]["kind"] == "Namespace"
    assert parse_node_config(by_kind(objects, "ConfigMap")["data"]["node.toml"]).hubs == [
        "file:///srv/hub"
    ]
    r = subprocess.run([*env_argv, "--uninstall", "-o", "json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)["items"]
    assert [o["kind"] for o in items] == ["DaemonSet", "Job"]
    # kubectl would run a helm hook annotation's object at once: the plain form has none.
    assert not any("annotations" in o["metadata"] for o in items)
    bad = tmp_path / "bad.toml"
    bad.write_text("hubs = [")
    r = subprocess.run([*env_argv, "--node-config", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "not valid TOML" in r.stderr


def test_image_refs():
    assert _deploy.split_image("registry:5000/floxk/installer:0.1.0") == (
        "registry:5000/floxk/installer", "0.1.0",
    )  # fmt: skip
    assert _deploy.split_image("registry:5000/floxk/installer") == (
        "registry:5000/floxk/installer", "latest",
    )  # fmt: skip
    assert _deploy.split_image("floxk.local/installer:x") == ("floxk.local/installer", "x")


def _agent():
    from tests.cli.test_deploy_manifests import _agent as load

    return load()
