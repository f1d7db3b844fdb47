"""Edit -> every pod Ready on the new version: `floxk dev` vs the same app as an image.

    python3 -m benchmarks.devloop [--quick] [--rounds N] [--keep]

`floxk up --name floxk-dev-loop` (the offline kind node image), then two Deployments of 2
replicas running the catalog's `web-serve` (busybox httpd) with a variable GREETING:
  flox   the environment (web + busybox, [vars] GREETING) in DIR, driven by floxk dev's own
         core (floxk._dev.Session, watching DIR with watchfiles as `floxk dev` does). An
         edit is a save of DIR/manifest.toml with a new GREETING; done when the session
         reports the new generation's rollout complete.
  image  the same files as an image (the environment's closure at /nix/store and its tree
         at /, `docker import`ed once) and per edit a rebuild `FROM` it with the new
         `ENV GREETING` (Docker SDK, classic builder, cached base), `kind load
         docker-image` and a rollout restart (kubectl's annotation); done when `floxk
         apply`'s follow sees the rollout complete.
Both sides are followed with the same code (floxk._cluster.apply.follow): every new pod
Ready, no old pod left. Outside the timed part each side is checked: 2 live pods, all on
the new version (floxk.dev/generation, or the restart annotation), GREETING inside them
the value just saved. N rounds interleaved. The cluster is deleted at the end unless
--keep. Skipped, with the reason in the JSON, without Docker, kind or the node image.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import queue
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, kind  # noqa: E402

CLUSTER = os.environ.get("FLOXK_DEV_CLUSTER", "floxk-dev-loop")
CONTEXT = f"kind-{CLUSTER}"
NAMESPACE = "default"
ENV_NAME = "bench/devloop"
BASE_REPO = "floxk.local/devloop-base"
APP_IMAGE = "floxk.local/devloop-app:dev"
REPLICAS = 2
TIMEOUT = 300
ROUNDS = {True: 2, False: 6}
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MANIFEST = (
    'version = 1\n[install]\nweb.pkg-path = "web"\nbusybox.pkg-path = "busybox"\n'
    '[vars]\nGREETING = "{greeting}"\n'
)


def deployment(name: str, *, image: str | None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "web", "command": ["web-serve"]}
    if image:
        container.update(image=image, imagePullPolicy="Never")
    annotations = None if image else {"flox.dev/environment": ENV_NAME}
    return kind.deployment(name, container, replicas=REPLICAS, annotations=annotations)


def live_pods(api, app: str) -> list:
    from kubernetes import client

    items = client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector=f"app={app}").items
    return [p for p in items if p.metadata.deletion_timestamp is None]


def greeting_in(kubeconfig: Path, pod: str) -> str | None:
    """GREETING inside the pod, as `kubectl exec env` shows it."""
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "--context", CONTEXT, "exec", pod, "--"]
        + ["env"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key == "GREETING":
            return value
    return None


class FloxSide:
    """floxk dev's session on DIR; one edit = one save of manifest.toml."""

    def __init__(self, work: Path, catalog: str) -> None:
        from floxk import _dev
        from floxk._lock import lock_environment

        self.dir = work / "env"
        self.dir.mkdir()
        (self.dir / "manifest.toml").write_text(MANIFEST.format(greeting="r0"))
        lock_environment(self.dir, catalog=catalog)  # the user's first lock, with the catalog
        manifests = work / "flox.yaml"
        import yaml

        manifests.write_text(yaml.safe_dump(deployment("devloop-flox", image=None)))
        self.events: queue.Queue = queue.Queue()
        self.session = _dev.Session(
            self.dir, [str(manifests)], emit=self.events.put, context=CONTEXT, timeout=TIMEOUT
        )
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.builds: list[float] = []
        self.session.start()
        self.generation = self._wait_ready(None)
        self.builds.clear()  # the edits' lock + push only
        self.thread = threading.Thread(target=self.session.watch, args=(self.stop,), daemon=True)
        self.thread.start()
        time.sleep(0.5)  # the watch is set up

    def _wait_ready(self, after: int | None) -> int:
        from floxk import _dev

        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            e = self.events.get(timeout=deadline - time.monotonic())
            if isinstance(e, _dev.Problem):
                self.problems.append(e.message)
                raise RuntimeError(f"floxk dev: {e.source}: {e.message}")
            if isinstance(e, _dev.Built) and e.pushed:
                self.builds.append(e.seconds)
            if isinstance(e, _dev.Rollout) and e.done and (after is None or e.generation > after):
                if e.failed:
                    raise RuntimeError(f"rollout of generation {e.generation} failed: {e.failed}")
                return e.generation
        raise RuntimeError(f"no rollout completed in {TIMEOUT} s")

    def edit(self, greeting: str) -> float:
        start = time.perf_counter()
        path = self.dir / "manifest.toml"
        tmp = path.with_name(".manifest.toml.new")
        tmp.write_text(MANIFEST.format(greeting=greeting))
        os.replace(tmp, path)  # how editors save
        self.generation = self._wait_ready(self.generation)
        return time.perf_counter() - start

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


class ImageSide:
    """The same app as an image: rebuild FROM the environment's files, kind load, restart."""

    def __init__(self, api, base: str) -> None:
        from floxk._cluster import apply as applying
        from floxk._cluster import kube

        self.api, self.base = api, base
        self.build(greeting="r0")
        kube.apply(api, deployment("devloop-image", image=APP_IMAGE))
        applying.follow(api, [("Deployment", NAMESPACE, "devloop-image")], timeout=TIMEOUT)

    def build(self, greeting: str) -> None:
        from floxk._cluster import kind as kind_cluster
        from floxk._cluster import nodeimage

        dockerfile = f"FROM {self.base}\nENV GREETING={greeting}\n".encode()
        ctx = io.BytesIO()
        with tarfile.open(fileobj=ctx, mode="w") as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
        ctx.seek(0)
        nodeimage.docker_client().images.build(
            fileobj=ctx, custom_context=True, tag=APP_IMAGE, rm=True
        )
        kind_cluster.PROVIDER.load_image(CLUSTER, APP_IMAGE)

    def edit(self, greeting: str) -> float:
        from kubernetes import client

        from floxk._cluster import apply as applying

        start = time.perf_counter()
        self.build(greeting)
        now = datetime.now(UTC).isoformat()
        client.AppsV1Api(self.api).patch_namespaced_deployment(
            "devloop-image",
            NAMESPACE,
            {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}},
        )
        statuses = applying.follow(
            self.api, [("Deployment", NAMESPACE, "devloop-image")], timeout=TIMEOUT
        )
        if any(s.failed for s in statuses):
            raise RuntimeError(f"image rollout failed: {statuses}")
        self.restarted_at = now
        return time.perf_counter() - start


def run(quick: bool, rounds: int | None = None, keep: bool = False) -> dict:
    reason = kind.skip_reason()
    if reason:
        return common.result("devloop", quick=quick, skipped=reason)
    from e2e.catalog import prepare

    rounds = rounds or ROUNDS[quick]
    checks: list[str] = []  # what did not hold
    with tempfile.TemporaryDirectory(prefix="floxk-bench-devloop-") as tmp:
        work = Path(tmp)
        common.note(f"floxk up --name {CLUSTER} (node image from {kind.BASE_IMAGE})")
        kubeconfig = work / "kubeconfig"
        up = kind.up(CLUSTER, kubeconfig)
        old_kubeconfig = os.environ.get("KUBECONFIG")
        try:
            os.environ["KUBECONFIG"] = str(kubeconfig)
            from floxk._cluster import kube

            api = kube.api_client(CONTEXT)
            catalog = prepare(work / "catalog")
            common.note("floxk dev session: first generation and its rollout")
            flox = FloxSide(work, catalog)
            pushed = {"ref": f"{ENV_NAME}:{flox.generation}"}
            common.note("the image side: the same files as an image, loaded into the node")
            base = kind.app_image(work, pushed, cluster=CLUSTER, repo=BASE_REPO)
            image = ImageSide(api, base)

            def check_flox(greeting: str) -> None:
                pods = live_pods(api, "devloop-flox")
                gens = {(p.metadata.annotations or {}).get("floxk.dev/generation") for p in pods}
                if len(pods) != REPLICAS or gens != {str(flox.generation)}:
                    checks.append(f"flox: {len(pods)} pods on generations {sorted(map(str, gens))}")
                for p in pods:
                    if greeting_in(kubeconfig, p.metadata.name) != greeting:
                        checks.append(f"flox: {p.metadata.name} lacks GREETING={greeting}")

            def check_image(greeting: str) -> None:
                pods = live_pods(api, "devloop-image")
                stamps = {(p.metadata.annotations or {}).get(RESTARTED_AT) for p in pods}
                if len(pods) != REPLICAS or stamps != {image.restarted_at}:
                    checks.append(f"image: {len(pods)} pods, restart stamps {stamps}")
                for p in pods:
                    if greeting_in(kubeconfig, p.metadata.name) != greeting:
                        checks.append(f"image: {p.metadata.name} lacks GREETING={greeting}")

            greetings = (f"r{n}" for n in itertools.count(1))  # one sequence for both sides

            def edit_round(side, check, done: Callable[[float], str]) -> Callable[[], float]:
                """One timed edit of `side` to the next greeting, then checked and said."""

                def one() -> float:
                    greeting = next(greetings)
                    seconds = side.edit(greeting)
                    check(greeting)
                    common.note(done(seconds))
                    return seconds

                return one

            cases = {
                "flox": edit_round(
                    flox,
                    check_flox,
                    lambda s: f"flox: edit -> generation {flox.generation} Ready in {s:.2f} s",
                ),
                "image": edit_round(
                    image,
                    check_image,
                    lambda s: f"image: edit -> rebuilt, loaded, rolled out in {s:.2f} s",
                ),
            }
            samples = common.interleaved(cases, rounds)
            flox.close()
            nodes = kube.node_summaries(api)
        finally:
            if old_kubeconfig is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = old_kubeconfig
            if not keep:
                kind.down(CLUSTER, kubeconfig)
    return common.result(
        "devloop",
        quick=quick,
        cluster={
            "name": CLUSTER,
            "node_image": up.get("node_image"),
            "nodes": nodes,
            "kept": keep,
        },
        replicas=REPLICAS,
        rounds=rounds,
        flox=common.summary(samples["flox"]),
        image=common.summary(samples["image"]),
        flox_lock_push=common.summary(flox.builds),
        ratio=common.ratio(samples["flox"], samples["image"]),
        failed_checks=checks,
    )


def report(doc: dict) -> None:
    common.print_table(
        [
            common.cell("floxk dev: edit -> every pod Ready", doc["flox"], common.ms),
            common.cell("  of which lock + push", doc["flox_lock_push"], common.ms),
            common.cell("image: rebuild, kind load, rollout", doc["image"], common.ms),
            ("floxk dev / image", f"{doc['ratio']['median_ratio']:.3f}"),
            ("every check held", str(not doc["failed_checks"])),
        ]
    )


def checks_hold(doc: dict) -> bool:
    return bool(doc.get("skipped")) or not doc["failed_checks"]


def report_with_failures(doc: dict) -> None:
    report(doc)
    if doc.get("failed_checks"):
        print(json.dumps(doc["failed_checks"], indent=2))


def main() -> int:
    return common.kind_main(__doc__, run, report_with_failures, ROUNDS, CLUSTER, checks_hold)


if __name__ == "__main__":
    sys.exit(main())
