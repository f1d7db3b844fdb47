"""Pod Ready latency in a real kind cluster: a flox pod on a warm environment vs an image pod.

    python3 -m benchmarks.kind [--quick] [--rounds N] [--keep]

`floxk up --name floxk-bench` (the offline kind node image of `task kind:image`), then one
environment (the catalog's `web`: busybox httpd, plus busybox) pushed with `floxk env push`
to the cluster's dev hub, and N interleaved rounds of two pods running `web-serve`:
  flox   runtimeClass flox, the stub image, the flox.dev/environment annotation; the
         environment is already realized on the node (warm)
  image  plain runtime, an image holding the same files (the closure at /nix/store and the
         environment tree at /), made with `docker import` and `kind load`
Each sample is the time from the apply call until the watch sees the pod Ready (no
readiness probe: Ready once the container runs). Outside the timed part every pod is checked
to serve the page, then deleted. The first flox pod, which realizes the environment on the
node (cold), and the image pod's first start are recorded once. The cluster is deleted at
the end unless --keep. Skipped, with the reason in the JSON, without a Docker Engine, kind
or the node image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from floxk._cluster.kindimage import offline_tag  # noqa: E402
from floxk._cluster.spec import DEFAULT_K8S_VERSION  # noqa: E402

CLUSTER = "floxk-bench"
CONTEXT = f"kind-{CLUSTER}"
BASE_IMAGE = os.environ.get("FLOXK_BENCH_KIND_IMAGE", offline_tag(DEFAULT_K8S_VERSION))
NAMESPACE = "default"
ENV_NAME = "bench/web"
IMAGE_REPO = "floxk.local/bench-web"
APP = ["web-serve"]
PAGE = "hello from floxk web"  # what the catalog's web package serves
READY_TIMEOUT = 300  # the cold pod realizes its environment on a busy 2-CPU node
ROUNDS = {True: 3, False: 10}


def skip_reason() -> str | None:
    """Why figure 6 cannot run on this machine, or None."""
    import shutil

    for tool in ("kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (`task kind:image` links kind)"
    from floxk._cluster import nodeimage

    try:
        client = nodeimage.docker_client()
    except Exception as e:
        return f"no Docker Engine ({e}); start one with clusters/kind/dockerd.sh start"
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        return f"the kind node image {BASE_IMAGE} is not built: run `task kind:image`"
    return None


def skipped(reason: str, quick: bool) -> dict[str, Any]:
    return common.result("kind", quick=quick, skipped=reason)


# --- the cluster and its environment ---------------------------------------------------------


def down(cluster: str, kubeconfig: Path | None = None) -> None:
    """`floxk down` the benchmark's cluster; a failure is noted, not raised (keeps the
    benchmark's own error, if any, in view)."""
    common.note(f"floxk down --name {cluster}")
    try:
        floxk("down", "--name", cluster, kubeconfig=kubeconfig)
    except RuntimeError as e:
        common.note(f"the cluster was not deleted: {e}")


def floxk(*args: str, kubeconfig: Path | None = None, timeout: float = 1800) -> dict[str, Any]:
    """`floxk ARGS -o json` as a user runs it; its JSON result. Progress stays on stderr."""
    env = dict(os.environ, **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {}))
    proc = subprocess.run(
        [sys.executable, "-m", "floxk", *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"floxk {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


def up(cluster: str, kubeconfig: Path, *args: str) -> dict[str, Any]:
    """`floxk up --name CLUSTER ARGS` (the offline node image) into a private kubeconfig (a
    kept cluster's context exported first: up leaves an existing cluster alone and writes no
    context for it)."""
    clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True)
    if cluster in clusters.stdout.split():
        subprocess.run(
            ["kind", "export", "kubeconfig", "--name", cluster, "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            check=True,
        )
    return floxk("up", "--name", cluster, "--base-image", BASE_IMAGE, *args, kubeconfig=kubeconfig)


def private_kubeconfig(dest: Path) -> Path:
    """This cluster's kubeconfig alone, current context set: other work on the machine may
    switch the shared kubeconfig's current context while the benchmark runs."""
    out = subprocess.run(
        ["kind", "get", "kubeconfig", "--name", CLUSTER], capture_output=True, text=True, check=True
    ).stdout
    dest.write_text(out)
    dest.chmod(0o600)
    return dest


def publish(work: Path, kubeconfig: Path, run_id: str) -> dict[str, Any]:
    """Lock web + busybox against the test catalog and `floxk env push` it to the dev hub.
    BENCH_RUN makes the lock digest new on every run, so the first flox pod is cold."""
    from e2e.catalog import prepare

    catalog = prepare(work / "catalog")
    env = work / "env"
    env.mkdir()
    (env / "manifest.toml").write_text(
        'version = 1\n[install]\nweb.pkg-path = "web"\nbusybox.pkg-path = "busybox"\n'
        f'[vars]\nBENCH_RUN = "{run_id}"\n'
    )
    floxk("env", "lock", str(env), "--catalog", catalog, kubeconfig=kubeconfig)
    return floxk("env", "push", str(env), "--name", ENV_NAME, kubeconfig=kubeconfig)


def app_image(
    work: Path, pushed: dict[str, Any], *, cluster: str = CLUSTER, repo: str = IMAGE_REPO
) -> str:
    """The image side: the environment realized on the host from the same dev hub (into a
    chroot store), its closure at /nix/store and its tree at /, `docker import`ed and
    loaded into the node. Returns the tag."""
    from benchmarks.crinode import store_image_layers
    from floxk._cluster import kind, nodeimage
    from floxk._cluster.spec import cluster_files
    from shim.core import hub
    from shim.core.model import current_system
    from shim.core.realize import realize

    files = cluster_files("kind", cluster)
    record = hub.peek(pushed["ref"], [files.hub_url])
    store = work / "image-store"
    env = realize(
        record.lock,
        system=current_system(),
        substituters=[files.hub_url],
        trusted_keys=[files.public_key.read_text().strip()],
        store_root=store,
        state_dir=work / "image-state",
    )
    tag = f"{repo}:{env.digest[:12]}"
    repo, version = tag.rsplit(":", 1)
    nodeimage.docker_client().api.import_image_from_data(
        store_image_layers(store, env)[0],
        repository=repo,
        tag=version,
        changes=["ENV PATH=/bin:/sbin"],
    )
    kind.PROVIDER.load_image(cluster, tag)
    return tag


# --- pods ------------------------------------------------------------------------------------


def flox_manifest(name: str, ref: str) -> dict[str, Any]:
    from floxk._cluster import pod

    return pod.fill_pod(_pod(name, image=None), env_ref=ref)


def image_manifest(name: str, image: str) -> dict[str, Any]:
    return _pod(name, image=image)


def _pod(name: str, *, image: str | None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "web", "command": APP}
    if image:
        container.update(image=image, imagePullPolicy="Never")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"floxk.dev/bench": "kind"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
    }


def deployment(
    name: str, container: dict[str, Any], *, replicas: int, annotations: dict | None = None
) -> dict[str, Any]:
    """A Deployment of `replicas` pods labelled app=NAME running `container`."""
    meta: dict[str, Any] = {"labels": {"app": name}}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": meta,
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
            },
        },
    }


def is_ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def time_to_ready(api, manifest: dict[str, Any]) -> float:
    """Seconds from the apply call until the pod is Ready, seen through a watch that starts
    at the resourceVersion the apply returned (so no event is missed and nothing polls)."""
    from kubernetes import client, watch

    from floxk._cluster import kube, pod

    core = client.CoreV1Api(api)
    name = manifest["metadata"]["name"]
    start = time.perf_counter()
    applied = kube.apply(api, manifest)
    w = watch.Watch()
    deadline = time.monotonic() + READY_TIMEOUT
    version = applied["metadata"]["resourceVersion"]
    while time.monotonic() < deadline:
        for event in w.stream(
            core.list_namespaced_pod,
            NAMESPACE,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=30,
        ):
            obj = event["object"]
            version = obj.metadata.resource_version
            if is_ready(obj):
                w.stop()
                return time.perf_counter() - start
            state = pod.pod_state(obj)
            if state.failed or state.done:
                w.stop()
                raise RuntimeError(f"pod {name} did not become Ready: {describe(api, name)}")
    raise RuntimeError(f"pod {name} not Ready after {READY_TIMEOUT} s: {describe(api, name)}")


def describe(api, name: str) -> str:
    from floxk._cluster import pod

    state = pod.read_state(api, name, NAMESPACE)
    events = pod.events(api, name, NAMESPACE)[-3:]
    return state.summary + "".join(f" | {e['reason']}: {e['message'][-300:]}" for e in events)


def node_realize_log(digest: str) -> dict[str, Any]:
    """What the node's realize.log says about this environment: trees built and store paths
    substituted (the cold pod's work; a warm pod must add neither)."""
    from floxk._cluster import nodeimage

    node = nodeimage.docker_client().containers.get(f"{CLUSTER}-control-plane")
    code, out = node.exec_run(["cat", "/var/lib/floxk/realize.log"])
    lines = [line.split() for line in out.decode().splitlines()] if code == 0 else []
    mine = [f for f in lines if len(f) > 3 and f[3] == digest]
    return {
        "trees": sum(1 for f in mine if f[2] == "tree"),
        "substituted": sorted({f[4] for f in mine if f[2] == "substitute"}),
    }


def serves(kubeconfig: Path, name: str) -> bool:
    """The app answers inside the pod (busybox wget from the same files)."""
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "-n", NAMESPACE, "exec", name, "--"]
        + ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return PAGE in proc.stdout


def delete(api, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    try:
        core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
    except ApiException as e:
        if e.status != 404:
            raise
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_pod(name, NAMESPACE)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        time.sleep(0.2)
    raise RuntimeError(f"pod {name} still exists 120 s after its deletion")


class Rounds:
    """One pod at a time: start, time to Ready, check it serves, delete (untimed)."""

    def __init__(self, api, kubeconfig: Path, ref: str, image: str) -> None:
        self.api, self.kubeconfig, self.ref, self.image = api, kubeconfig, ref, image
        self.count = 0
        self.not_serving: list[str] = []

    def _one(self, manifest: dict[str, Any]) -> float:
        seconds = time_to_ready(self.api, manifest)
        name = manifest["metadata"]["name"]
        if not serves(self.kubeconfig, name):
            self.not_serving.append(name)
        delete(self.api, name)
        common.note(f"{name}: Ready in {seconds:.2f} s")
        return seconds

    def flox(self) -> float:
        self.count += 1
        return self._one(flox_manifest(f"bench-flox-{self.count}", self.ref))

    def image_pod(self) -> float:
        self.count += 1
        return self._one(image_manifest(f"bench-image-{self.count}", self.image))


# --- the benchmark -----------------------------------------------------------------------------


def run(quick: bool, rounds: int | None = None, keep: bool = False) -> dict:
    reason = skip_reason()
    if reason:
        return skipped(reason, quick)
    from floxk._cluster import kube

    rounds = rounds or ROUNDS[quick]
    run_id = uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory(prefix="floxk-bench-kind-") as tmp:
        work = Path(tmp)
        common.note(f"floxk up --name {CLUSTER} (node image from {BASE_IMAGE})")
        t = time.perf_counter()
        up = floxk("up", "--provider", "kind", "--name", CLUSTER, "--base-image", BASE_IMAGE)
        up_seconds = time.perf_counter() - t
        try:
            kubeconfig = private_kubeconfig(work / "kubeconfig")
            pushed = publish(work, kubeconfig, run_id)
            common.note(f"pushed {pushed['ref']} ({len(pushed['paths'])} paths); the image side")
            image = app_image(work, pushed)
            from kubernetes import config

            api = config.new_client_from_config(config_file=str(kubeconfig), context=CONTEXT)
            pods = Rounds(api, kubeconfig, pushed["ref"], image)
            cold = pods.flox()  # realizes the environment on the node
            image_first = pods.image_pod()  # the image's first container on the node
            samples = common.interleaved({"flox": pods.flox, "image": pods.image_pod}, rounds)
            nodes = kube.node_summaries(api)
            realized = node_realize_log(pushed["digest"])
        finally:
            if not keep:
                down(CLUSTER)
    return common.result(
        "kind",
        quick=quick,
        cluster={
            "name": CLUSTER,
            "created_by_this_run": bool(up.get("created")),
            "node_image": up.get("node_image"),
            "node_image_built": bool(up.get("node_image_built")),
            "up_seconds": up_seconds,
            "nodes": nodes,
            "kept": keep,
        },
        environment={"ref": pushed["ref"], "digest": pushed["digest"], "paths": pushed["paths"]},
        node_realize=realized,
        image=image,
        rounds=rounds,
        cold_flox=cold,
        image_first=image_first,
        flox=common.summary(samples["flox"]),
        image_pod=common.summary(samples["image"]),
        ratio=common.ratio(samples["flox"], samples["image"]),
        cold_over_image=cold / common.summary(samples["image"])["median"],
        all_served=not pods.not_serving,
        not_serving=pods.not_serving,
    )


def report(doc: dict) -> None:
    common.print_table(
        [
            ("cold flox pod (first, realizes)", common.ms(doc["cold_flox"])),
            ("image pod, first on the node", common.ms(doc["image_first"])),
            common.cell("flox pod, warm environment", doc["flox"]),
            common.cell("image pod, same files", doc["image_pod"]),
            ("flox / image", f"{doc['ratio']['median_ratio']:.3f}"),
            ("cold flox / image", f"{doc['cold_over_image']:.3f}"),
            ("every pod served the page", str(doc["all_served"])),
            ("trees built on the node", str(doc["node_realize"]["trees"])),
            ("store paths substituted (cold)", str(len(doc["node_realize"]["substituted"]))),
        ]
    )


def main() -> int:
    return common.kind_main(__doc__, run, report, ROUNDS, CLUSTER, checks_hold)


def checks_hold(doc: dict) -> bool:
    """Every pod served the page and the node built the environment's tree exactly once."""
    return bool(doc.get("skipped")) or (doc["all_served"] and doc["node_realize"]["trees"] == 1)


if __name__ == "__main__":
    sys.exit(main())
