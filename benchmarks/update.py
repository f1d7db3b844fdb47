"""Figure b, an update through CRI: one package changes, two replicas roll to it.

    python3 -m benchmarks.update [--quick] [--rounds N] [--out DIR]

The application is the test catalog's python3 runtime with pyapp0 and busybox, running as
2 replicas on the node of benchmarks/crinode.py. Round r moves the catalog's app revision
r -> r+1: pyapp0's store path changes, the runtime's ~23 paths do not. The new pyapp0 is
built before the round (the application's build is the same for both sides). Timed per side,
interleaved:
  flox     `floxk env lock` against the new catalog + `floxk env push` (a new generation to
           the signed hub), then 2 new pods, one after the other (a rollout with a surge of
           one), each until its container runs; the node fetches from the http:// hub;
  layered  the new image built (tar + gzip of one layer per store path, from the build's
           store) and pushed to the registry (layers it has are skipped), then the same 2
           pods, the first pulling the image through CRI;
  single   the same with a single-layer image.
Old pods are removed after the new ones run, outside the timed part. Bytes fetched: what the
http hub served during the rollout (flox), the blobs of the new image the node did not have
(image). Target: flox / image <= 0.5.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cri_api.v1 import api_pb2 as pb  # noqa: E402

from benchmarks import common, crinode  # noqa: E402
from testkit import images  # noqa: E402
from testkit.httpserve import StaticServer  # noqa: E402
from testkit.images import STUB_IMAGE  # noqa: E402

NAME = "bench/update"
SHAPES_BY_MODE = {True: ("layered",), False: ("layered", "single")}  # quick: CI-sized
REPLICAS = 2
TARGET_RATIO = 0.5
ROUNDS = {True: 1, False: 3}


def start_pod(cri, app: common.App, *, flox_ref: str | None, image: str, pull: bool) -> str:
    annotations = {"flox.dev/environment": flox_ref} if flox_ref else {}
    pod = cri.run_pod("app", annotations, runtime_handler="flox" if flox_ref else "")
    if pull:
        cri.pull_image(image)
    command = ["sh", "-c", f"{app.command()} && exec sleep 3600"]
    cri.start(cri.create_container(pod, "app", image, command=command))
    return pod


def check_revision(cri, app: common.App, pods: list[str], revision: int) -> None:
    want = app.expect(revision)
    for pod in pods:
        (c,) = [c for c in cri.containers() if c.pod_sandbox_id == pod]
        out = cri.logs(c.id, contains=want)
        if want not in out or cri.status(c.id).state != pb.CONTAINER_RUNNING:
            raise RuntimeError(f"pod {pod[:12]} does not run revision {revision}: {out!r}")


def run(quick: bool, rounds: int | None = None) -> dict:
    from floxk._lock import lock_environment
    from floxk._push import push_environment
    from shim.core import hub
    from shim.core.lockfile import load_lock
    from shim.core.model import current_system
    from shim.core.realize import realize

    rounds = rounds or ROUNDS[quick]
    shapes = SHAPES_BY_MODE[quick]
    line = crinode.containerd_line()
    with tempfile.TemporaryDirectory(prefix="floxk-bench-update-") as tmp:
        work = Path(tmp)
        common.note(f"preparing {rounds + 1} catalog revisions and building their pyapp0")
        app = common.App.for_mode(quick)
        manifest = app.manifest()
        flakes = {
            r: app.catalog(work / f"catalog-{r}", app_revision=str(r)) for r in range(1, rounds + 2)
        }
        node = crinode.make_node(work, manifest, name=NAME, flake=flakes[1])
        for r in range(2, rounds + 2):  # the builds, outside the timed part
            d = work / f"prebuild-{r}"
            d.mkdir()
            (d / "manifest.toml").write_text(manifest)
            lock_environment(d, catalog=flakes[r])
        env_dir = work / "hub" / "env"  # where common.publish locked revision 1
        server = StaticServer(node.env["cache"])
        node.point_at(node.store, node.state, hub=server.url)
        # The image build's side: each revision pushed to a builder cache of its own (the
        # image build's inputs must not depend on the flox side having pushed already) and
        # realized into a builder store that keeps the previous build, as a CI cache does;
        # all outside the timed part.
        builder_store, builder_state = work / "builder-store", work / "builder-state"
        builder_cache = work / "builder-cache"

        def built(lock) -> object:
            return realize(
                lock,
                system=current_system(),
                substituters=[builder_cache.as_uri()],
                trusted_keys=[node.env["key"]],
                store_root=builder_store,
                state_dir=builder_state,
            )

        compressed: dict[bytes, bytes] = {}

        def build_and_push(env, shape: str, tag: str):
            layers = images.env_image_layers(
                builder_store, env.activation["closure"], env.path, shape
            )
            image = images.oci_image(layers, gzip_layers=True, compressed=compressed)
            return image, node.registry.push(f"bench/update-{shape}:{tag}", image)

        cri = node.start(line)
        phases: dict[str, dict[str, list[float]]] = {
            k: {"publish": [], "rollout": []} for k in ("flox", *shapes)
        }
        phases["flox"]["lock"] = []
        fetched: dict[str, list[float]] = {k: [] for k in ("flox", *shapes)}
        try:
            push_environment(
                env_dir, to=builder_cache.as_uri(), name="builder/app",
                signing_key=node.env["secret"],
            )  # fmt: skip
            env1 = built(node.env["lock"])
            running: dict[str, list[str]] = {"flox": []}
            current: dict[str, object] = {}
            for shape in shapes:
                image, pushed = build_and_push(env1, shape, "1")
                cri.pull_image(pushed.ref)
                current[shape] = image
                running[shape] = [
                    start_pod(cri, app, flox_ref=None, image=pushed.ref, pull=False)
                    for _ in range(REPLICAS)
                ]
            running["flox"] = [
                start_pod(cri, app, flox_ref=NAME, image=STUB_IMAGE, pull=False)
                for _ in range(REPLICAS)
            ]
            for kind in running:
                check_revision(cri, app, running[kind], 1)
            revision = {"flox": 1, **{s: 1 for s in shapes}}
            pending: dict[str, object] = {}

            def roll(kind: str, new_pods) -> None:
                old = running[kind]
                running[kind] = new_pods
                revision[kind] += 1
                check_revision(cri, app, new_pods, revision[kind])
                for pod in old:
                    cri.remove_pod(pod)

            def flox() -> float:
                r = revision["flox"] + 1
                before = server.bytes_sent
                t0 = time.perf_counter()
                lock_environment(env_dir, catalog=flakes[r])
                locked = time.perf_counter()
                push_environment(
                    env_dir, to=node.env["cache"].as_uri(), name=NAME,
                    signing_key=node.env["secret"],
                )  # fmt: skip
                t1 = time.perf_counter()
                new = [
                    start_pod(cri, app, flox_ref=NAME, image=STUB_IMAGE, pull=False)
                    for _ in range(REPLICAS)
                ]
                t2 = time.perf_counter()
                fetched["flox"].append(float(server.bytes_sent - before))
                phases["flox"]["publish"].append(t1 - t0)
                phases["flox"]["lock"].append(locked - t0)
                phases["flox"]["rollout"].append(t2 - t1)
                roll("flox", new)
                return t2 - t0

            def image(shape: str) -> float:
                r = revision[shape] + 1
                if r not in pending:  # the new revision's build output (untimed)
                    d = work / f"image-env-{r}"
                    d.mkdir()
                    (d / "manifest.toml").write_text(manifest)
                    lock_environment(d, catalog=flakes[r])
                    push_environment(
                        d, to=builder_cache.as_uri(), name="builder/app",
                        signing_key=node.env["secret"],
                    )  # fmt: skip
                    pending[r] = built(load_lock(d / "manifest.lock"))
                t0 = time.perf_counter()
                new_image, pushed = build_and_push(pending[r], shape, str(r))
                t1 = time.perf_counter()
                new = [
                    start_pod(cri, app, flox_ref=None, image=pushed.ref, pull=i == 0)
                    for i in range(REPLICAS)
                ]
                t2 = time.perf_counter()
                had = {d for d, _ in current[shape].blobs()}
                fetched[shape].append(
                    float(
                        len(new_image.manifest)
                        + sum(len(b) for d, b in new_image.blobs() if d not in had)
                    )
                )
                current[shape] = new_image
                phases[shape]["publish"].append(t1 - t0)
                phases[shape]["rollout"].append(t2 - t1)
                roll(shape, new)
                return t2 - t0

            cases = {"flox": flox, **{s: (lambda s=s: image(s)) for s in shapes}}
            common.note(f"{rounds} interleaved update rounds")
            samples = common.interleaved(cases, rounds)
            generation = hub.peek(NAME, [node.env["hub"]]).generation
            cri.remove_all()
            cri.assert_node_clean()
        finally:
            server.close()
            node.stop()
    return crinode.result(
        "update",
        quick=quick,
        line=line,
        app=app,
        closure=env1.activation["closure"],
        rounds=rounds,
        replicas=REPLICAS,
        target_ratio=TARGET_RATIO,
        generations_pushed=generation,
        **common.versus(samples, list(shapes)),
        phases={k: common.summaries(by) for k, by in phases.items()},
        bytes_fetched=common.summaries(fetched),
    )


def report(doc: dict) -> None:
    shapes = list(doc["ratio"])
    rows = [common.cell("flox: lock + push + 2 pods", doc["flox"])]
    for s in shapes:
        rows.append(common.cell(f"{s} image: build + push + pull + 2 pods", doc[s]))
    for k, by in doc["phases"].items():
        rows += [common.cell(f"  {k} {p}", by[p]) for p in by if p != "rollout"]
        rows.append(common.cell(f"  {k} rollout", by["rollout"]))
    rows += common.ratio_rows(doc)
    rows += common.bytes_rows("bytes the node fetched", doc["bytes_fetched"], places=2)
    common.print_table(rows)


def main() -> int:
    return common.rounds_main(__doc__, run, report, ROUNDS)


if __name__ == "__main__":
    sys.exit(main())
