"""floxk installer agent: runs in the installer DaemonSet's pod, one per node (stdlib only).

`agent.py install`: copy the payload (zipapps, node.sh, python3/nix .debs for the node's
Debian release, the operator's node.toml) onto the node through nsenter into the node's
mount namespace, run node.sh there (it installs python3/nix when missing, then
`floxk-node install`, then restarts containerd), and report the outcome in the node's
labels: flox.dev/shim=pending -> provisioned (+ flox.dev/enabled=true) or failed (the
reason in the annotation flox.dev/shim-message). Then it sleeps: a DaemonSet pod that
exits is restarted, and a second run changes nothing anyway.

`agent.py uninstall`: node.sh uninstall (`floxk-node uninstall --restart`, then the
files install added), then both labels are removed.

Restarting containerd does not stop this container: kind's and the usual containerd units
use KillMode=process, and a container lives in its own shim process, not in containerd.
"""

from __future__ import annotations

import io
import json
import os
import signal
import ssl
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

PAYLOAD = Path(__file__).resolve().parent / "host"  # copied to HOST_DIR on the node
HOST_DIR = "/var/lib/floxk-installer"
NODE_CONFIG = Path("/etc/floxk-deploy/node.toml")  # the operator's node.toml (ConfigMap)
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
STATE_LABEL = "flox.dev/shim"
ENABLED_LABEL = "flox.dev/enabled"
MESSAGE_ANNOTATION = "flox.dev/shim-message"
NSENTER = ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--"]


def log(msg: str) -> None:
    print(f"floxk-installer: {msg}", file=sys.stderr, flush=True)


def patch_node(name: str, labels: dict, annotations: dict) -> None:
    """Merge-patch the node's labels/annotations (None removes a key) with the pod's token."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    body = json.dumps({"metadata": {"labels": labels, "annotations": annotations}}).encode()
    req = urllib.request.Request(
        f"https://{host}:{port}/api/v1/nodes/{name}",
        data=body,
        method="PATCH",
        headers={
            "Authorization": f"Bearer {(SA_DIR / 'token').read_text().strip()}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        resp.read()


def on_host(argv: list[str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(NSENTER + argv, input=stdin, capture_output=True, check=False)


def payload_tar() -> bytes:
    """The payload as a tar stream, untarred on the node by the node's own tar (no path
    from the container is ever followed on the host)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(PAYLOAD, arcname=".")
        if NODE_CONFIG.is_file():  # a ConfigMap file is a symlink: add its content
            data = NODE_CONFIG.read_bytes()
            info = tarfile.TarInfo("./node.toml")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def copy_payload() -> None:
    r = on_host(["sh", "-c", f'rm -rf "{HOST_DIR}" && mkdir -p "{HOST_DIR}" && tar -x -C "{HOST_DIR}"'],
                stdin=payload_tar())  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"copying the payload to the node failed: {r.stderr.decode()[-500:]}")


def run_node_script(action: str) -> str:
    r = on_host(["sh", f"{HOST_DIR}/node.sh", action])
    out, err = r.stdout.decode(), r.stderr.decode()
    sys.stderr.write(err)
    sys.stdout.write(out)
    if r.returncode != 0:
        last = [line for line in (err or out).splitlines() if line.strip()][-3:]
        raise RuntimeError(f"node.sh {action} exited {r.returncode}: {' | '.join(last)}")
    return out


def short(text: str) -> str:
    return text if len(text) <= 1000 else text[:997] + "..."


def install(node: str) -> None:
    patch_node(node, {STATE_LABEL: "pending"}, {MESSAGE_ANNOTATION: None})
    try:
        copy_payload()
        run_node_script("install")
    except Exception as e:  # every failure ends up on the node, where the operator looks
        log(f"failed: {e}")
        patch_node(node, {STATE_LABEL: "failed", ENABLED_LABEL: None},
                   {MESSAGE_ANNOTATION: short(str(e))})  # fmt: skip
        return
    patch_node(
        node, {STATE_LABEL: "provisioned", ENABLED_LABEL: "true"}, {MESSAGE_ANNOTATION: None}
    )
    log("provisioned")


def uninstall(node: str) -> None:
    try:
        copy_payload()
        run_node_script("uninstall")
    except Exception as e:
        log(f"failed: {e}")
        patch_node(node, {STATE_LABEL: "failed"}, {MESSAGE_ANNOTATION: short(str(e))})
        return
    patch_node(node, {STATE_LABEL: None, ENABLED_LABEL: None}, {MESSAGE_ANNOTATION: None})
    log("uninstalled")


def main() -> None:
    action = sys.argv[1] if len(sys.argv) > 1 else "install"
    node = os.environ["NODE_NAME"]
    log(f"{action} on node {node}")
    {"install": install, "uninstall": uninstall}[action](node)
    # Stay up: a DaemonSet restarts pods that exit. SIGTERM ends the pod promptly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
