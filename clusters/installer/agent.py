"""floxk installer agent: runs in the installer DaemonSet's pod, one per node (stdlib only).

`agent.py install`: copy the payload (zipapps, node.sh, python3/nix .debs for the node's
Debian release, the operator's node.toml) onto the node through nsenter into the node's
mount namespace, run node.sh there (it installs python3/nix when missing, then
`floxk-node install`, then restarts containerd), and report the outcome in the node's
labels: flox.dev/shim=pending -> provisioned (+ flox.dev/enabled=true) or failed (the
reason in the annotation flox.dev/shim-message). Then it stays up (a DaemonSet pod that
exits is restarted, and a second run changes nothing anyway) and runs the node's periodic
GC, `node.sh gc` every node.toml [gc] interval: on clusters this DaemonSet does what the
systemd timer floxk-gc.timer does on hosts (node.sh installs without the timer).

`agent.py uninstall`: node.sh uninstall (`floxk-node uninstall --restart`, then the
files install added), then both labels are removed.

`agent.py ready`: the installer pod's readiness probe: exit 0 once this pod provisioned
its node. A DaemonSet rollout (new node settings) waits for each pod to be Ready, so a
value a node refuses stops the rollout at that node; the others keep their settings.

`agent.py uninstall-all [--timeout S]`: the uninstall hook's Job (helm uninstall, `floxk
shim undeploy`): labels every node that has flox.dev/shim as `removing` (the uninstaller
DaemonSet runs there), then waits until each node's label is gone; exit 1 naming the
nodes that failed or did not finish in time.

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
import time
import urllib.parse
import urllib.request
from pathlib import Path

PAYLOAD = Path(__file__).resolve().parent / "host"  # copied to HOST_DIR on the node
HOST_DIR = "/var/lib/floxk-installer"
NODE_CONFIG = Path("/etc/floxk-deploy/node.toml")  # the operator's node.toml (ConfigMap)
NETRC = Path("/etc/floxk-deploy-credentials/netrc")  # private hub credentials (Secret)
READY = Path("/floxk-installer/provisioned")  # this pod provisioned its node
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
STATE_LABEL = "flox.dev/shim"
ENABLED_LABEL = "flox.dev/enabled"
MESSAGE_ANNOTATION = "flox.dev/shim-message"
NSENTER = ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--"]


def log(msg: str) -> None:
    print(f"floxk-installer: {msg}", file=sys.stderr, flush=True)


def api(path: str, *, method: str = "GET", body: dict | None = None) -> dict:
    """One call to the Kubernetes API with the pod's service account token."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    req = urllib.request.Request(
        f"https://{host}:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={
            "Authorization": f"Bearer {(SA_DIR / 'token').read_text().strip()}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def patch_node(name: str, labels: dict, annotations: dict) -> None:
    """Merge-patch the node's labels/annotations (None removes a key)."""
    api(f"/api/v1/nodes/{name}", method="PATCH",
        body={"metadata": {"labels": labels, "annotations": annotations}})  # fmt: skip


def labelled_nodes() -> dict[str, tuple[str, str]]:
    """Every node with the label flox.dev/shim: name -> (state, message)."""
    items = api(f"/api/v1/nodes?labelSelector={urllib.parse.quote(STATE_LABEL, safe='')}")["items"]
    return {
        n["metadata"]["name"]: (
            n["metadata"]["labels"][STATE_LABEL],
            (n["metadata"].get("annotations") or {}).get(MESSAGE_ANNOTATION, ""),
        )
        for n in items
    }


def on_host(argv: list[str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(NSENTER + argv, input=stdin, capture_output=True, check=False)


def payload_tar() -> bytes:
    """The payload as a tar stream, untarred on the node by the node's own tar (no path
    from the container is ever followed on the host)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(PAYLOAD, arcname=".")
        # ConfigMap and Secret files are symlinks: add their content.
        for src, name, mode in ((NODE_CONFIG, "node.toml", 0o644), (NETRC, "netrc", 0o600)):
            if src.is_file():
                data = src.read_bytes()
                info = tarfile.TarInfo(f"./{name}")
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def copy_payload() -> None:
    r = on_host(["sh", "-c", f'rm -rf "{HOST_DIR}" && mkdir -p "{HOST_DIR}" && tar -x -C "{HOST_DIR}"'],
                stdin=payload_tar())  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"copying the payload to the node failed: {r.stderr.decode()[-500:]}")


def run_node_script(action: str, *, echo: bool = True) -> str:
    r = on_host(["sh", f"{HOST_DIR}/node.sh", action])
    out, err = r.stdout.decode(), r.stderr.decode()
    sys.stderr.write(err)
    if echo:
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
    READY.touch()
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


def uninstall_all(timeout: float) -> int:
    """Mark every floxk node `removing`, wait until the uninstaller cleared each one."""
    nodes = labelled_nodes()
    log(f"uninstalling on {len(nodes)} node(s): {', '.join(sorted(nodes)) or '-'}")
    for name in sorted(nodes):
        patch_node(name, {STATE_LABEL: "removing", ENABLED_LABEL: None}, {MESSAGE_ANNOTATION: None})
    deadline = time.monotonic() + timeout
    last = None
    while True:
        left = {n: s for n, s in labelled_nodes().items() if n in nodes}
        summary = ", ".join(f"{n}={s[0]}" for n, s in sorted(left.items()))
        if summary != last:
            log(f"waiting for: {summary}" if left else "every node uninstalled")
            last = summary
        failed = {n: s for n, s in left.items() if s[0] == "failed"}
        if not left:
            return 0
        if failed and len(failed) == len(left):
            for n, (_, msg) in sorted(failed.items()):
                log(f"node {n} failed: {msg}")
            log("the nodes keep the message (annotation flox.dev/shim-message); fix and "
                "uninstall again: the failed nodes are marked removing once more")  # fmt: skip
            return 1
        if time.monotonic() > deadline:
            log(f"not uninstalled after {timeout:.0f} s: {summary} (is the uninstaller pod "
                "running there? kubectl get pods -o wide -l app.kubernetes.io/name=floxk-uninstaller)")  # fmt: skip
            return 1
        time.sleep(2)


def main() -> None:
    action = sys.argv[1] if len(sys.argv) > 1 else "install"
    if action == "ready":
        sys.exit(0 if READY.exists() else 1)
    if action == "uninstall-all":
        timeout = float(sys.argv[3]) if sys.argv[2:3] == ["--timeout"] else 240.0
        sys.exit(uninstall_all(timeout))
    node = os.environ["NODE_NAME"]
    log(f"{action} on node {node}")
    {"install": install, "uninstall": uninstall}[action](node)
    # Stay up: a DaemonSet restarts pods that exit. SIGTERM ends the pod promptly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if action == "install" and READY.exists():
        gc_loop()
    while True:
        signal.pause()


def gc_interval() -> float:
    """node.toml's [gc] interval, read by the shim's own parser (from the payload's
    floxk-node zipapp: one reading of node.toml everywhere); 300 s without a node.toml."""
    sys.path.insert(0, str(PAYLOAD / "bin" / "floxk-node"))
    from shim.core.node import NodeConfig, parse_node_config

    if not NODE_CONFIG.is_file():
        return NodeConfig().gc.interval
    return parse_node_config(NODE_CONFIG.read_text(), source=str(NODE_CONFIG)).gc.interval


def gc_loop() -> None:
    """What the systemd timer does on hosts, for the nodes this DaemonSet provisioned:
    every [gc] interval, `floxk-node gc --auto` on the node (frees only at disk pressure;
    a no-op below the high mark). Each run is one line in the pod's log."""
    interval = gc_interval()
    log(f"periodic GC every {interval:g} s (node.toml [gc] interval)")
    while True:
        time.sleep(interval)
        try:
            result = json.loads(run_node_script("gc", echo=False))
        except Exception as e:  # the next round tries again; the node keeps running pods
            log(f"gc: failed: {e}")
            continue
        freed = result.get("freed_envs") or []
        log(f"gc: ran={result.get('ran')} used={result.get('used_percent_before')}% "
            f"freed={len(freed)} {' '.join(freed)}".rstrip())  # fmt: skip


if __name__ == "__main__":
    main()
