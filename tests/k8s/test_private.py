"""Private environments in a real kind cluster, Flox's way: a Secret holding `floxhub-token`
mounted at /var/run/secrets/flox.dev. The hub is a real nginx on this machine enforcing
the token (tests/privatehub.py), listening on the kind network's gateway so the nodes
reach it; the cluster's node.toml (the host file `floxk up` mounts into every node) names
it with `auth = "pod-token"`.

Right token: the pod runs. No token, wrong token, and a tokenless pod on the node where
the environment is already realized: the container fails with the runtime's message in
the pod's events. The token is in no event, node log or state file.

Marker k8s; run by `task test:k8s` (FLOXK_E2E_KIND=1) once the kind node image is built.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from floxk._cluster.constants import STUB_IMAGE
from tests import privatehub
from tests.k8s.conftest import fresh_cluster, run_floxk, run_kubectl

pytestmark = [pytest.mark.k8s, pytest.mark.nix, pytest.mark.root]

NAME = os.environ.get("FLOXK_PRIVATE_CLUSTER", "floxk-private")
CONTEXT = f"kind-{NAME}"
NODE = f"{NAME}-control-plane"


def floxk(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return run_floxk(*args, timeout=timeout)


def kubectl(*args: str, stdin: str | None = None, check: bool = True):
    return run_kubectl(CONTEXT, *args, stdin=stdin, check=check)


def _gateway() -> str:
    out = subprocess.run(
        ["docker", "network", "inspect", "kind", "--format",
         "{{range .IPAM.Config}}{{.Gateway}} {{end}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    v4 = [ip for ip in out if "." in ip]
    assert v4, f"the kind network has no IPv4 gateway: {out}"
    return v4[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """floxk up, a private hub on the kind network, node.toml pointing at it."""
    with fresh_cluster("--provider", "kind", "--name", NAME):
        with privatehub.served_hub(tmp_path_factory.mktemp("private-kind"), _gateway()) as served:
            yield from _configured(*served)


def _configured(published, server):
    """node.toml of the cluster names the private hub (auth = "pod-token") and its key."""
    from floxk._cluster.up import node_toml_path

    node_toml = node_toml_path("kind", NAME)
    original = node_toml.read_text()
    # In place (the file is bind-mounted into the node: a rename would not be seen there).
    with open(node_toml, "r+") as f:
        text = original.replace("hubs = [", f'hubs = ["{server.url}", ', 1).replace(
            "trusted_public_keys = [", f'trusted_public_keys = ["{published.key}", ', 1
        )
        text += f'\n[[credentials]]\nurl = "{server.url}"\nauth = "pod-token"\n'
        f.seek(0)
        f.write(text)
        f.truncate()
    yield {"server": server, "published": published}


def _secret(name: str, token: str) -> None:
    kubectl("delete", "secret", name, "--ignore-not-found")
    kubectl("create", "secret", "generic", name, f"--from-literal={privatehub.TOKEN_KEY}={token}")


def _pod(name: str, secret: str | None) -> str:
    mounts = volumes = ""
    if secret is not None:
        mounts = (
            "      volumeMounts:\n"
            f"        - {{name: flox-token, mountPath: {privatehub.SECRET_DIR}, readOnly: true}}\n"
        )
        volumes = f"  volumes:\n    - {{name: flox-token, secret: {{secretName: {secret}}}}}\n"
    return (
        "apiVersion: v1\nkind: Pod\n"
        f"metadata:\n  name: {name}\n  annotations: {{flox.dev/environment: acme/private}}\n"
        "spec:\n  runtimeClassName: flox\n  restartPolicy: Never\n"
        "  tolerations:\n"
        "    - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}\n"
        "  containers:\n    - name: app\n      image: " + STUB_IMAGE + "\n"
        "      imagePullPolicy: Never\n"
        '      command: [sh, -c, "echo who=$WHO"]\n' + mounts + volumes
    )


def _run(name: str, secret: str | None) -> None:
    kubectl("delete", "pod", name, "--ignore-not-found", "--wait=true")
    kubectl("apply", "-f", "-", stdin=_pod(name, secret))


def _wait(name: str, *, phase: str | None = None, event: str | None = None, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = json.loads(kubectl("get", "pod", name, "-o", "json").stdout)
        if phase is not None and pod["status"].get("phase") == phase:
            return pod
        if event is not None:
            messages = _events(name)
            if any(event in m for m in messages):
                return messages
        time.sleep(2)
    raise AssertionError(f"{name}: no {phase or event!r} in {timeout}s: {_events(name)}")


def _events(name: str) -> list[str]:
    out = kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    return [e.get("message") or "" for e in json.loads(out)["items"]]


def test_private_environment_per_pod(cluster):
    _secret("floxhub-token", privatehub.TOKEN)
    _secret("wrong-token", privatehub.WRONG)

    # No token on a cold node: refused, nothing realized.
    _run("private-none", None)
    _wait("private-none", event="this pod has none (HTTP 401)")

    _run("private-ok", "floxhub-token")
    _wait("private-ok", phase="Succeeded", timeout=600)
    assert kubectl("logs", "private-ok").stdout == "who=private\n"

    # The environment is realized on the node now; tokenless and wrong-token pods still fail.
    _run("private-none", None)
    _wait("private-none", event="this pod has none (HTTP 401)")
    _run("private-wrong", "wrong-token")
    _wait("private-wrong", event="refused this pod's floxhub-token")

    events = json.dumps(json.loads(kubectl("get", "events", "-A", "-o", "json").stdout))
    node_files = subprocess.run(
        ["docker", "exec", NODE, "sh", "-c",
         "cat /var/lib/floxk/floxk.log; find /var/lib/floxk -type f -size -1M "
         "-not -path '*/store/*' -exec cat {} +"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert node_files.returncode == 0, node_files.stderr
    # The sandbox's prefetch (containerd 2.x on kind nodes) had no token: it left it to create.
    assert "prefetch acme/private: left to the containers' create" in node_files.stdout
    for token in (privatehub.TOKEN, privatehub.WRONG):
        assert token not in events
        assert token not in node_files.stdout
    for log in cluster["server"].logs():
        assert privatehub.TOKEN not in log.read_text()
    for name in ("private-none", "private-ok", "private-wrong"):
        kubectl("delete", "pod", name, "--ignore-not-found", "--wait=false")
