"""Figures a and b in kind: a cold first pod and a 2-replica roll, flox vs registry images.

    python3 -m benchmarks.kindab [--quick] [--rounds N] [--keep] [--out DIR]

One cluster for both figures: `floxk up --registry --name floxk-kindbench` (the offline kind
node image; the registry container `floxk-registry` on localhost:5001 that the node pulls
from, as kind's local-registry setup has it). The flox side's hub is the cluster's dev hub
directory served over http:// on the kind network's gateway (testkit/httpserve.py, counting
the bytes it sends); the node's node.toml names only that URL, so every store path a flox
pod needs crosses the network as an image layer does. The image side pushes the same files
(the closure at /nix/store, the environment tree at /) to the cluster's registry, as one
layer (single) and one layer per store path (layered). The application is that of figures
a and b through CRI (benchmarks/cold.py, update.py; common.App): the test catalog's python3
runtime with pyapp0 and busybox (--quick: app0 and busybox). Every pod runs
`sh -c 'APP && exec sleep 3600'`; a sample ends when the watch sees the pod (figure a) or
every pod of the Deployment (figure b) Ready; outside the timed part each pod's log must
show the app's revision.

a. cold first pod, rounds interleaved (flox, single, layered):
  flox    the node has never realized the environment: before each flox pod the node's
          own `floxk-node gc` frees the environment's tree and deletes its closure from
          the node's /nix/store (checked: none of the paths is left), the product's
          counterpart of `crictl rmi`; the create server and containerd stay warm for both
          sides. Each flox pod substitutes the whole closure from the http hub (checked in
          the node's realize.log: every path once per pod) and builds the tree;
  image   `crictl rmi` of the image on the node (containerd's synchronous GC drops its
          content and snapshots), then a pod with imagePullPolicy IfNotPresent: kubelet
          pulls it from the registry (checked in the pod's events).
  One untimed pod of each kind first (the node's first flox sandbox, the first pull); once
  after the rounds, Nix alone: `nix copy` of the closure from the hub into an empty store
  on the node.

b. update: three Deployments of 2 replicas (flox, and an image Deployment per shape).
  Round r moves the catalog's app revision r -> r+1 (pyapp0's path changes, the runtime's
  do not; the new pyapp0 is built before the round, for both sides):
  flox    `floxk env lock` + `floxk env push` (a new generation to the dev hub), the
          template's floxk.dev/generation stamped as `floxk dev` does, applied;
  image   the new image built (tar + gzip of its layers from a builder store that kept
          the previous revision, as a CI cache does; compressed layers reused) and pushed
          to the cluster's registry (blobs it has skipped), the template's image set.
  Then floxk apply's follow until the rollout is complete (every new pod Ready, no old one
  left; the default surge of one). Bytes the node fetched: what the hub served during the
  round (flox); the blobs of the new image not in the old one (image).

The cluster is deleted at the end unless --keep, the registry container when this run
started it. Skipped, with the reason in the JSON, without Docker, kind or the node image.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, kind  # noqa: E402
from benchmarks.cold import SHAPES, log_times  # noqa: E402
from benchmarks.cold import TARGET_RATIO as COLD_TARGET  # noqa: E402
from benchmarks.devloop import live_pods  # noqa: E402
from benchmarks.update import REPLICAS, SHAPES_BY_MODE  # noqa: E402
from benchmarks.update import TARGET_RATIO as UPDATE_TARGET  # noqa: E402

CLUSTER = os.environ.get("FLOXK_KINDAB_CLUSTER", "floxk-kindbench")
CONTEXT = f"kind-{CLUSTER}"
NODE = f"{CLUSTER}-control-plane"
NAMESPACE = kind.NAMESPACE
COLD_ENV = "bench/kind-cold"
UPDATE_ENV = "bench/kind-update"
REPO = "bench/kindab"  # image repositories in the cluster's registry: REPO-<figure>-<shape>
ROUNDS = {True: 1, False: 5}  # figure a; figure b takes UPDATE_ROUNDS of the same mode
UPDATE_ROUNDS = {True: 1, False: 3}
TIMEOUT = 300.0


# --- the node ---------------------------------------------------------------------------------


def node_run(*argv: str) -> tuple[int, str]:
    """(exit code, output) of `argv` inside the node."""
    from floxk._cluster import nodeimage

    code, out = nodeimage.docker_client().containers.get(NODE).exec_run(list(argv))
    return code, out.decode(errors="replace")


def node_exec(*argv: str, check: bool = True) -> str:
    code, text = node_run(*argv)
    if check and code != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} on {NODE} failed ({code}): {text[-500:]}")
    return text


def kind_gateway() -> str:
    """The kind network's IPv4 gateway: the address of this machine the nodes reach."""
    from floxk._cluster import nodeimage

    config = nodeimage.docker_client().networks.get("kind").attrs["IPAM"]["Config"]
    for entry in config:
        if "." in entry.get("Gateway", ""):
            return entry["Gateway"]
    raise RuntimeError(f"the kind network has no IPv4 gateway: {config}")


def point_node_at(hub_url: str) -> None:
    """node.toml (the host file `floxk up` bind-mounts into the node) names only `hub_url`.
    Rewritten in place: a rename would not be seen through the bind mount."""
    from floxk._cluster.up import node_toml_path

    path = node_toml_path("kind", CLUSTER)
    text, n = re.subn(r"(?m)^hubs = \[.*\]$", f'hubs = ["{hub_url}"]', path.read_text())
    if n != 1:
        raise RuntimeError(f"{path} has no `hubs = [...]` line to point at {hub_url}")
    path.write_text(text)


def reset_flox(closure: list[str]) -> dict[str, Any]:
    """`floxk-node gc` on the node, then the paths of `closure` still in its store (must be
    none: the next flox pod finds nothing of the environment)."""
    import json
    import time

    from floxk._cluster.nodecheck import NODE_APP

    # Nix counts a running process that uses a path as a GC root: the previous pod's
    # processes may still be exiting (crictl rmp returns first), so collect again, briefly.
    deleted, deadline = 0, time.monotonic() + 15
    while True:
        collected = json.loads(node_exec("python3", "-I", "-S", NODE_APP, "gc"))
        deleted += len(collected["store_paths_deleted"])
        left = node_exec(
            "sh", "-c", 'for p; do [ -e "$p" ] && echo "$p"; done; true', "sh", *closure
        ).split()
        if not left or time.monotonic() > deadline:
            return {"deleted": deleted, "left": left}
        time.sleep(0.5)


def raw_nix_copy(hub_url: str, key: str, closure: list[str]) -> float:
    """Seconds of Nix alone on the node: `nix copy` of `closure` from the hub into an empty
    scratch store, signatures checked as the node checks them (what a flox cold pod cannot
    do faster)."""
    scratch = "/tmp/floxk-bench-raw-store"
    node_exec("rm", "-rf", scratch)
    t = time.perf_counter()
    node_exec(
        "nix", "copy", "--from", hub_url, "--to", scratch,
        "--option", "trusted-public-keys", key, "--option", "narinfo-cache-positive-ttl", "0",
        *closure,
    )  # fmt: skip
    seconds = time.perf_counter() - t
    node_exec("sh", "-c", f"chmod -R u+w {scratch}; rm -rf {scratch}")
    return seconds


def remove_sandboxes(pod_name: str) -> None:
    """Take a deleted pod's sandbox and containers off the node now (kubelet's container GC
    would do it within a minute): until then a flox container keeps its tree in use and an
    image container keeps the image's snapshots, which a new pull would not unpack again."""
    ids = node_exec("crictl", "pods", "--label", f"io.kubernetes.pod.name={pod_name}", "-q")
    for sandbox in ids.split():
        node_exec("crictl", "rmp", "-f", sandbox)


def remove_image(ref: str) -> None:
    """`crictl rmi` (a no-op for an image the node lacks), checked: the node lists it no more."""
    out = node_exec("crictl", "rmi", ref, check=False)
    if node_run("crictl", "inspecti", ref)[0] == 0:
        raise RuntimeError(f"crictl rmi {ref} left the image on {NODE}: {out[-300:]}")


def substitutions(digest: str, since: float) -> dict[str, int]:
    """Store path -> how often the node substituted it for environment `digest` after
    `since` (epoch seconds: the node shares this machine's clock)."""
    out: dict[str, int] = {}
    for line in node_exec("cat", "/var/lib/floxk/realize.log", check=False).splitlines():
        f = line.split()
        if len(f) > 4 and f[2] == "substitute" and f[3] == digest and float(f[0]) >= since:
            out[f[4]] = out.get(f[4], 0) + 1
    return out


def node_log_times(scratch: Path) -> dict[str, float]:
    """benchmarks.cold.log_times of the node's realize.log (copied into `scratch`): when the
    last store path was substituted and when the tree was built (epoch seconds)."""
    scratch.mkdir(exist_ok=True)
    (scratch / "realize.log").write_text(
        node_exec("cat", "/var/lib/floxk/realize.log", check=False)
    )
    return log_times(scratch)


# --- objects ----------------------------------------------------------------------------------


def container(app: common.App, image: str | None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": "app",
        "command": ["sh", "-c", f"{app.command()} && exec sleep 3600"],
    }
    if image:
        c.update(image=image, imagePullPolicy="IfNotPresent")
    return c


def pod(name: str, app: common.App, *, image: str | None = None, ref: str | None = None) -> dict:
    from floxk._cluster import pod as pods

    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"floxk.dev/bench": "kindab"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [container(app, image)]},
    }
    return pods.fill_pod(body, env_ref=ref) if ref else body


def deployment(
    name: str, app: common.App, *, image: str | None = None, generation: int | None = None
) -> dict:
    """A Deployment of REPLICAS; flox: pinned to UPDATE_ENV:generation and stamped with
    floxk.dev/generation as `floxk dev` stamps it (the changed template rolls it)."""
    from floxk import _dev
    from floxk._cluster import pod as pods

    annotations = None
    if generation is not None:
        annotations = {pods.ENV_ANNOTATION: f"{UPDATE_ENV}:{generation}"}
    body = kind.deployment(name, container(app, image), replicas=REPLICAS, annotations=annotations)
    if generation is None:
        return body
    body = pods.fill_object(body)
    _dev.stamp(body, name=UPDATE_ENV, generation=generation)
    return body


def log_of(api, name: str, want: str, timeout: float = 60) -> str:
    """The pod's log once it shows `want` (or whatever it shows after `timeout`)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = core.read_namespaced_pod_log(name, NAMESPACE)
        if want in out:
            break
        time.sleep(0.5)
    return out


def roll(api, body: dict) -> None:
    """Apply `body` (a Deployment) and follow its rollout to the end (floxk apply's follow)."""
    from floxk._cluster import apply as applying
    from floxk._cluster import kube

    kube.apply(api, body)
    name = body["metadata"]["name"]
    (status,) = applying.follow(api, [("Deployment", NAMESPACE, name)], timeout=TIMEOUT)
    if status.failed or not status.done:
        raise RuntimeError(f"rollout of {name}: {status.phase} {status.message or ''}")


# --- the image side ----------------------------------------------------------------------------


class Builder:
    """The image build's side: each revision pushed to a builder cache of its own (the build
    must not depend on the flox side having pushed) and realized into a builder store that
    keeps what it built before; compressed layers reused, as `docker build` caches them."""

    def __init__(self, work: Path, key: str, secret: Path) -> None:
        from floxk._cluster import registry as local_registry
        from testkit.registry import Registry

        self.work, self.key, self.secret = work, key, secret
        self.store, self.state, self.cache = work / "store", work / "state", work / "cache"
        self.compressed: dict[bytes, bytes] = {}
        self.registry = Registry(
            work / "registry", port=local_registry.HOST_PORT, address="localhost"
        )  # the cluster's registry (not started here: floxk up runs it)

    def realize(self, env_dir: Path):
        from floxk._push import push_environment
        from shim.core.lockfile import load_lock
        from shim.core.model import current_system
        from shim.core.realize import realize

        push_environment(
            env_dir, to=self.cache.as_uri(), name="builder/app", signing_key=self.secret
        )
        return realize(
            load_lock(env_dir / "manifest.lock"),
            system=current_system(),
            substituters=[self.cache.as_uri()],
            trusted_keys=[self.key],
            store_root=self.store,
            state_dir=self.state,
        )

    def push(self, env, shape: str, ref: str):
        """(image, Pushed) of the environment's image in `shape`, pushed as `ref`."""
        from testkit import images

        layers = images.env_image_layers(self.store, env.activation["closure"], env.path, shape)
        image = images.oci_image(layers, gzip_layers=True, compressed=self.compressed)
        return image, self.registry.push(ref, image)


# --- the benchmark ------------------------------------------------------------------------------


def lock_env(directory: Path, manifest: str, flake: str) -> Path:
    from floxk._lock import lock_environment

    directory.mkdir(parents=True)
    (directory / "manifest.toml").write_text(manifest)
    lock_environment(directory, catalog=flake)
    return directory


def registry_container_exists() -> bool:
    import docker.errors

    from floxk._cluster import nodeimage
    from floxk._cluster import registry as local_registry

    try:
        nodeimage.docker_client().containers.get(local_registry.CONTAINER)
        return True
    except docker.errors.NotFound:
        return False


def run(quick: bool, rounds: int | None = None, keep: bool = False) -> dict:
    reason = kind.skip_reason()
    if reason:
        return common.result("kindab", quick=quick, skipped=reason)
    from testkit.registry import registry_binary

    registry_binary()  # `floxk up --registry` runs it (built from the Go module proxy once)
    cold_rounds = rounds or ROUNDS[quick]
    update_rounds = rounds or UPDATE_ROUNDS[quick]
    app = common.App.for_mode(quick)
    registry_was_there = registry_container_exists()
    with tempfile.TemporaryDirectory(prefix="floxk-bench-kindab-") as tmp:
        work = Path(tmp)
        kubeconfig = work / "kubeconfig"
        common.note(f"floxk up --registry --name {CLUSTER} (node image from {kind.BASE_IMAGE})")
        t = time.perf_counter()
        up = kind.up(CLUSTER, kubeconfig, "--registry")
        up_seconds = time.perf_counter() - t
        server = None
        try:
            from floxk._cluster import kube
            from floxk._cluster.spec import cluster_files
            from testkit.httpserve import StaticServer

            files = cluster_files("kind", CLUSTER)
            api = kube.api_client(CONTEXT, config_file=kubeconfig)
            server = StaticServer(files.hub, address=kind_gateway())
            point_node_at(server.url)
            common.note(f"the dev hub over http at {server.url}; catalogs and builds")
            flakes = {
                r: app.catalog(work / f"catalog-{r}", app_revision=str(r))
                for r in range(1, update_rounds + 2)
            }
            builder = Builder(
                work / "builder", files.public_key.read_text().strip(), files.secret_key
            )
            cold = figure_a(work, api, app, flakes[1], files, server, builder, cold_rounds)
            update = figure_b(work, api, app, flakes, files, server, builder, update_rounds)
            nodes = kube.node_summaries(api)
            node_nix = common._version_in(node_exec("nix", "--version"))  # the node's, not ours
        finally:
            if server is not None:
                server.close()
            if not keep:
                kind.down(CLUSTER, kubeconfig)
                if not registry_was_there:
                    remove_registry_container()
    runtimes = {n["container_runtime"] for n in nodes}
    return common.result(
        "kindab",
        quick=quick,
        containerd=", ".join(sorted(r.removeprefix("containerd://") for r in runtimes)),
        cluster={
            "name": CLUSTER,
            "node_image": up.get("node_image"),
            "node_image_built": bool(up.get("node_image_built")),
            "registry": up.get("registry"),
            "up_seconds": up_seconds,
            "nodes": nodes,
            "node_nix": node_nix,
            "kept": keep,
        },
        application=app.describe(),
        replicas=REPLICAS,
        cold=cold,
        update=update,
    )


def remove_registry_container() -> None:
    from floxk._cluster import nodeimage
    from floxk._cluster import registry as local_registry

    common.note(f"removing the registry container {local_registry.CONTAINER} (this run started it)")
    try:
        nodeimage.docker_client().containers.get(local_registry.CONTAINER).remove(force=True)
    except Exception as e:  # noqa: BLE001 - noted, the benchmark's own result stands
        common.note(f"the registry container was not removed: {e}")


def figure_a(work, api, app, flake, files, server, builder, rounds: int) -> dict[str, Any]:
    from floxk._push import push_environment

    env_dir = lock_env(work / "cold-env", app.manifest(), flake)
    pushed = push_environment(
        env_dir, to=files.hub_url, name=COLD_ENV, signing_key=files.secret_key
    )
    env = builder.realize(env_dir)
    closure = env.activation["closure"]
    images = {s: builder.push(env, s, f"{REPO}-cold-{s}:1")[1] for s in SHAPES}
    want = app.expect(1)
    problems: list[str] = []
    fetched: dict[str, list[float]] = {"flox": [], **{s: [] for s in SHAPES}}
    resets: list[dict[str, Any]] = []
    flox_phases: dict[str, list[float]] = {}
    count = 0

    def one(manifest: dict, pulled: str | None) -> float:
        from floxk._cluster import pod as pods

        name = manifest["metadata"]["name"]
        seconds = kind.time_to_ready(api, manifest)
        out = log_of(api, name, want)
        if want not in out:
            problems.append(f"{name}: log {out[-200:]!r} lacks {want!r}")
        if pulled:
            messages = [e["message"] for e in pods.events(api, name, NAMESPACE)]
            if not any("Successfully pulled image" in m for m in messages):
                problems.append(f"{name}: kubelet did not pull {pulled}: {messages[-3:]}")
        kind.delete(api, name)
        remove_sandboxes(name)
        common.note(f"{name}: Ready in {seconds:.2f} s")
        return seconds

    def flox() -> float:
        nonlocal count
        count += 1
        reset = reset_flox(closure)
        resets.append(reset)
        if reset["left"]:
            problems.append(f"floxk-node gc left {len(reset['left'])} closure paths")
        before, wall = server.bytes_sent, time.time()
        seconds = one(pod(f"cold-flox-{count}", app, ref=pushed.ref), None)
        fetched["flox"].append(float(server.bytes_sent - before))
        for event, at in node_log_times(work / "node-log").items():  # when the node's work ended
            flox_phases.setdefault(event, []).append(at - wall)
        return seconds

    def image(shape: str) -> float:
        nonlocal count
        count += 1
        ref = images[shape].ref
        remove_image(ref)
        seconds = one(pod(f"cold-{shape}-{count}", app, image=ref), ref)
        fetched[shape].append(float(images[shape].size))
        return seconds

    cases = {"flox": flox, **{s: (lambda s=s: image(s)) for s in SHAPES}}
    common.note("figure a: the node's first flox sandbox and first pulls (untimed)")
    since = time.time()
    first = {name: case() for name, case in cases.items()}
    for v in [*fetched.values(), *flox_phases.values()]:
        v.clear()
    common.note(f"figure a: {rounds} interleaved rounds of cold pods")
    samples = common.interleaved(cases, rounds)
    per_path = substitutions(pushed.digest, since)
    raw = raw_nix_copy(server.url, files.public_key.read_text().strip(), closure)
    flox_pods = rounds + 1
    if set(per_path) != set(closure) or set(per_path.values()) != {flox_pods}:
        problems.append(
            f"realize.log: substitutions per path {sorted(set(per_path.values()))} over"
            f" {len(per_path)} of {len(closure)} paths, want {flox_pods} each"
        )
    files_, size = common.tree_stats(builder.store, closure)
    return {
        "rounds": rounds,
        "target_ratio": COLD_TARGET,
        "ref": pushed.ref,
        "closure_paths": len(closure),
        "closure_files": files_,
        "closure_bytes": size,
        "images": {s: {"ref": p.ref, "bytes": p.size} for s, p in images.items()},
        "first": first,
        **common.versus(samples, list(SHAPES)),
        "bytes_fetched": common.summaries(fetched),
        "flox_node_work": common.summaries(flox_phases),
        "raw_nix_copy_seconds": raw,
        "node_gc": {
            "store_paths_deleted": common.summary([float(r["deleted"]) for r in resets]),
            "closure_paths_left": max((len(r["left"]) for r in resets), default=0),
        },
        "substitutions_per_path": sorted(set(per_path.values())),
        "problems": problems,
    }


def figure_b(work, api, app, flakes, files, server, builder, rounds: int) -> dict[str, Any]:
    from floxk._lock import lock_environment
    from floxk._push import push_environment

    shapes = SHAPES_BY_MODE[not app.realistic]  # quick mode: the busybox app
    manifest = app.manifest()
    common.note(f"figure b: building the app's {rounds + 1} revisions (untimed)")
    for r in range(2, rounds + 2):
        lock_env(work / f"prebuild-{r}", manifest, flakes[r])
    env_dir = lock_env(work / "update-env", manifest, flakes[1])
    pushed = push_environment(
        env_dir, to=files.hub_url, name=UPDATE_ENV, signing_key=files.secret_key
    )
    built = {1: builder.realize(lock_env(work / "image-env-1", manifest, flakes[1]))}
    current: dict[str, Any] = {}
    names = {"flox": "roll-flox", **{s: f"roll-{s}" for s in shapes}}
    roll(api, deployment(names["flox"], app, generation=pushed.generation))
    for s in shapes:
        current[s], p = builder.push(built[1], s, f"{REPO}-update-{s}:1")
        roll(api, deployment(names[s], app, image=p.ref))
    revision = {k: 1 for k in names}
    generation = pushed.generation
    problems: list[str] = []
    phases: dict[str, dict[str, list[float]]] = {k: {"publish": [], "rollout": []} for k in names}
    phases["flox"]["lock"] = []
    fetched: dict[str, list[float]] = {k: [] for k in names}

    def check(kind_: str) -> None:
        want = app.expect(revision[kind_])
        live = live_pods(api, names[kind_])
        if len(live) != REPLICAS:
            problems.append(f"{kind_}: {len(live)} live pods after the roll, want {REPLICAS}")
        for p in live:
            out = log_of(api, p.metadata.name, want)
            if want not in out:
                problems.append(f"{kind_}: {p.metadata.name} log {out[-200:]!r} lacks {want!r}")

    def flox() -> float:
        nonlocal generation
        r = revision["flox"] + 1
        before = server.bytes_sent
        t0 = time.perf_counter()
        lock_environment(env_dir, catalog=flakes[r])
        locked = time.perf_counter()
        new = push_environment(
            env_dir, to=files.hub_url, name=UPDATE_ENV, signing_key=files.secret_key
        )
        t1 = time.perf_counter()
        roll(api, deployment(names["flox"], app, generation=new.generation))
        t2 = time.perf_counter()
        generation = new.generation
        fetched["flox"].append(float(server.bytes_sent - before))
        phases["flox"]["lock"].append(locked - t0)
        phases["flox"]["publish"].append(t1 - t0)
        phases["flox"]["rollout"].append(t2 - t1)
        revision["flox"] = r
        check("flox")
        common.note(f"roll-flox: generation {generation} rolled in {t2 - t0:.2f} s")
        return t2 - t0

    def image(shape: str) -> float:
        r = revision[shape] + 1
        if r not in built:  # the build's output for the new revision (untimed)
            built[r] = builder.realize(lock_env(work / f"image-env-{r}", manifest, flakes[r]))
        t0 = time.perf_counter()
        new_image, p = builder.push(built[r], shape, f"{REPO}-update-{shape}:{r}")
        t1 = time.perf_counter()
        roll(api, deployment(names[shape], app, image=p.ref))
        t2 = time.perf_counter()
        had = {d for d, _ in current[shape].blobs()}
        fetched[shape].append(
            float(
                len(new_image.manifest) + sum(len(b) for d, b in new_image.blobs() if d not in had)
            )
        )
        current[shape] = new_image
        phases[shape]["publish"].append(t1 - t0)
        phases[shape]["rollout"].append(t2 - t1)
        revision[shape] = r
        check(shape)
        common.note(f"roll-{shape}: revision {r} rolled in {t2 - t0:.2f} s")
        return t2 - t0

    cases = {"flox": flox, **{s: (lambda s=s: image(s)) for s in shapes}}
    common.note(f"figure b: {rounds} interleaved update rounds")
    samples = common.interleaved(cases, rounds)
    from kubernetes import client

    for name in names.values():  # a kept cluster's next run starts from a clean node
        client.AppsV1Api(api).delete_namespaced_deployment(name, NAMESPACE)
    return {
        "rounds": rounds,
        "replicas": REPLICAS,
        "target_ratio": UPDATE_TARGET,
        "generations_pushed": generation,
        **common.versus(samples, list(shapes)),
        "phases": {k: common.summaries(by) for k, by in phases.items()},
        "bytes_fetched": common.summaries(fetched),
        "problems": problems,
    }


def report(doc: dict) -> None:
    a, b = doc["cold"], doc["update"]
    rows = [
        common.closure_row("a. closure", a),
        common.cell("a. flox, env from the http hub", a["flox"]),
        *(common.cell(f"a. image pulled from the registry, {s}", a[s]) for s in SHAPES),
        *common.ratio_rows(a, "a. "),
        *common.bytes_rows("a. bytes the node fetched", a["bytes_fetched"]),
    ]
    for k, v in a.get("flox_node_work", {}).items():
        rows.append(common.cell(f"a.   flox: {k} after the apply", v))
    if "raw_nix_copy_seconds" in a:
        rows.append(
            ("a.   Nix alone: nix copy of the closure", common.ms(a["raw_nix_copy_seconds"]))
        )
    shapes = list(b["ratio"])
    rows.append(common.cell("b. flox: lock + push + roll 2 replicas", b["flox"]))
    for s in shapes:
        rows.append(common.cell(f"b. {s} image: build + push + roll (pull)", b[s]))
    for k, by in b["phases"].items():
        rows += [common.cell(f"b.   {k} {p}", v) for p, v in by.items()]
    rows += common.ratio_rows(b, "b. ")
    rows += common.bytes_rows("b. bytes the node fetched", b["bytes_fetched"], places=2)
    rows.append(("every check held", str(checks_hold(doc))))
    common.print_table(rows)
    for problem in a["problems"] + b["problems"]:
        print(f"  check: {problem}")


def checks_hold(doc: dict) -> bool:
    """Every pod ran the right revision, every flox cold pod found nothing of its environment
    on the node and substituted every path once, every image pod pulled its image."""
    return bool(doc.get("skipped")) or not (doc["cold"]["problems"] or doc["update"]["problems"])


def main() -> int:
    return common.kind_main(
        __doc__, run, report, ROUNDS, CLUSTER, checks_hold, quick_help="1 round each"
    )


if __name__ == "__main__":
    sys.exit(main())
