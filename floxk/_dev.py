"""`floxk dev`: edit manifest.toml, see the pods run on the new environment.

Three parts, each usable (and tested) on its own:
- Watched says which paths matter (DIR/manifest.toml and the manifest files) and what a
  batch of file changes triggers; changes() turns watchfiles' batches into those triggers.
- EnvBuilder turns DIR/manifest.toml into a generation on the dev hub: lock with the
  catalog the environment was locked with, push only when the lock changed.
- Session applies the manifests through `floxk apply`'s core with every pod template that
  uses the environment stamped with the current generation (a pinned ref gets the new
  generation, every template the annotation floxk.dev/generation, which is what rolls the
  workload), follows the rollout, streams the pods' logs. Everything it learns is an event
  passed to `emit`; nothing here prints.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from floxk._cluster import apply as applying
from floxk._cluster import kube
from floxk._cluster import pod as pods
from shim.core import hub
from shim.core.errors import FloxkError, LockError, NotFoundError, TrustError

ENV_FILE = "manifest.toml"
GENERATION_ANNOTATION = "floxk.dev/generation"
# Kinds whose pods never pick up a changed template (a Pod is its own template, a Job's
# template is immutable, a ReplicaSet does not replace its pods): deleted and applied anew.
REPLACED_KINDS = ("Pod", "Job", "ReplicaSet")


# --- events: what a session tells its renderer ------------------------------------------------


@dataclass
class Step:
    """Progress: a lock, a push, a workload moved, nothing to do."""

    text: str


@dataclass
class Problem:
    """Something went wrong; the loop goes on. source: manifest, lock, push, apply, rollout,
    pod, files."""

    source: str
    message: str
    hint: str | None = None
    details: list[str] = field(default_factory=list)


@dataclass
class Built:
    ref: str  # OWNER/NAME:GEN now current
    generation: int
    digest: str
    pushed: bool  # False: the lock was the one already published
    paths: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class Rollout:
    generation: int
    statuses: list[applying.WorkloadStatus]
    done: bool = False  # every workload reached its outcome (some may have failed)
    seconds: float | None = None  # from the change that started it, when done

    @property
    def failed(self) -> list[applying.WorkloadStatus]:
        return [s for s in self.statuses if s.failed]


@dataclass
class LogLine:
    namespace: str
    pod: str
    container: str
    text: str


Event = Step | Problem | Built | Rollout | LogLine
Emit = Callable[[Event], None]


# --- what is watched, and what a change triggers -----------------------------------------------


@dataclass(frozen=True)
class Change:
    env: bool = False  # DIR/manifest.toml was written
    manifests: bool = False  # a manifest file was written, added or removed

    def __bool__(self) -> bool:
        return self.env or self.manifests


@dataclass(frozen=True)
class Watched:
    env_file: Path
    manifest_files: tuple[Path, ...]  # -f FILE
    manifest_dirs: tuple[Path, ...]  # -f DIR: its *.yaml/*.yml/*.json

    @classmethod
    def of(cls, directory: Path, files: Iterable[str | Path]) -> Watched:
        env_file = Path(directory).resolve() / ENV_FILE
        names, dirs = [], []
        for f in files:
            if str(f) == "-":
                raise FloxkError(
                    "floxk dev cannot watch stdin (-f -)", hint="pass the manifest FILE or DIR"
                )
            path = Path(f).resolve()
            if path.is_dir():
                dirs.append(path)
            elif path.is_file():
                names.append(path)
            else:
                raise NotFoundError(f"{f} does not exist", hint="pass -f FILE or -f DIR")
        return cls(env_file, tuple(names), tuple(dirs))

    def roots(self) -> list[Path]:
        """Directories to watch (not recursively): editors save by renaming a new file over
        the old one, which a watch on the file itself would lose."""
        roots = [
            self.env_file.parent,
            *self.manifest_dirs,
            *(f.parent for f in self.manifest_files),
        ]
        return list(dict.fromkeys(roots))

    def wants(self, path: str | Path) -> bool:
        return bool(self.classify([path]))

    def classify(self, paths: Iterable[str | Path]) -> Change:
        env = manifests = False
        for p in paths:
            path = Path(p)
            if path == self.env_file:
                env = True
            elif path in self.manifest_files or (
                path.parent in self.manifest_dirs
                and path.suffix in pods.MANIFEST_SUFFIXES
                and not path.name.startswith(".")
            ):
                manifests = True
        return Change(env=env, manifests=manifests)


def changes(watched: Watched, *, stop: threading.Event | None = None) -> Iterator[Change]:
    """Each batch of file changes that matters, as a Change, until `stop` is set. A batch
    is what watchfiles groups (it waits for 50 ms without a change, 1.6 s at most)."""
    import watchfiles

    for batch in watchfiles.watch(
        *watched.roots(),
        watch_filter=lambda _change, path: watched.wants(path),
        recursive=False,
        stop_event=stop,
    ):
        change = watched.classify(path for _kind, path in batch)
        if change:
            yield change


# --- manifest.toml -> a generation on the hub ---------------------------------------------------


def catalog_of(directory: Path) -> str | None:
    """The catalog flake DIR/manifest.lock was locked with (its catalog packages record it
    as `locked_url`, as Flox's locks do); None when there is no lock or no catalog package."""
    from shim.core.lockfile import load_lock

    path = Path(directory) / "manifest.lock"
    if not path.exists():
        return None
    try:
        lock = load_lock(path)
    except FloxkError:
        return None
    urls = [
        p.raw["locked_url"]
        for p in lock.packages
        if "attr_path" in p.raw and p.raw.get("locked_url")
    ]
    return urls[0] if urls else None


class EnvBuilder:
    """DIR/manifest.toml to a generation of OWNER/NAME on a file:// hub."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        hub_url: str,
        signing_key: Path | None,
        catalog: str | None = None,
    ) -> None:
        owner, env, generation = hub.parse_ref(name)
        if generation is not None:
            raise FloxkError(
                f"--name {name!r} names a generation",
                hint="name the environment (OWNER/NAME); floxk dev publishes the generations",
            )
        self.directory = Path(directory)
        self.owner, self.env = owner, env
        self.hub_url = hub_url
        self.signing_key = signing_key
        self.catalog = catalog
        self.generation: int | None = None
        self.digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.owner}/{self.env}"

    def published(self) -> tuple[int, str] | None:
        """(generation, digest) of the hub's latest generation; None when there is none, or
        when it cannot be read (e.g. a record of an older floxk's format): then the next
        build pushes a new generation, which every node can verify."""
        try:
            # our own dev hub, read on the laptop: unverified is fine (nodes verify)
            record = hub.fetch(self.name, [self.hub_url], None)
        except (NotFoundError, TrustError, LockError):
            return None
        return record.generation, record.digest

    def build(self) -> Built:
        """Lock; push a new generation when the lock differs from the current one (at the
        first build: from the hub's latest). ManifestError (line and key), LockError,
        NixError as they come: nothing is pushed then."""
        from floxk._lock import lock_environment
        from floxk._push import push_environment
        from shim.core.model import load_manifest

        started = time.monotonic()
        load_manifest(self.directory / ENV_FILE)  # a TOML error fails here, before Nix runs
        catalog = self.catalog or catalog_of(self.directory)
        locked = lock_environment(self.directory, catalog=catalog)
        digest = locked.lock.digest()
        if self.generation is None and (latest := self.published()) is not None:
            self.generation, self.digest = latest
        if self.generation is not None and digest == self.digest:
            return Built(
                ref=f"{self.name}:{self.generation}",
                generation=self.generation,
                digest=digest,
                pushed=False,
                seconds=time.monotonic() - started,
                warnings=locked.warnings,
            )
        pushed = push_environment(
            self.directory, to=self.hub_url, name=self.name, signing_key=self.signing_key
        )
        self.generation, self.digest = pushed.generation, pushed.digest
        return Built(
            ref=pushed.ref,
            generation=pushed.generation,
            digest=pushed.digest,
            pushed=True,
            paths=len(pushed.paths),
            seconds=time.monotonic() - started,
            warnings=locked.warnings + pushed.warnings,
        )


# --- pod templates ----------------------------------------------------------------------------


def env_names(docs: list[pods.Document]) -> list[str]:
    """OWNER/NAME of every environment the documents' pod templates name, in order."""
    found: list[str] = []
    for doc in docs:
        template = pods.pod_template(copy.deepcopy(doc.body))
        ref = ((template or {}).get("metadata") or {}).get("annotations", {}) or {}
        ref = ref.get(pods.ENV_ANNOTATION) if isinstance(ref, dict) else None
        if isinstance(ref, str):
            try:
                owner, name, _ = hub.parse_ref(ref)
            except FloxkError:
                continue  # apply reports it with its file and line
            found.append(f"{owner}/{name}")
    return list(dict.fromkeys(found))


def choose_name(docs: list[pods.Document], name: str | None) -> str:
    """--name, else the one environment the manifests name."""
    if name:
        return name
    names = env_names(docs)
    if len(names) == 1:
        return names[0]
    if not names:
        raise FloxkError(
            "the manifests name no environment",
            hint=f"pass --name OWNER/NAME (pod templates without {pods.ENV_ANNOTATION} get it)",
        )
    raise FloxkError(
        f"the manifests name {len(names)} environments: {', '.join(names)}",
        hint="pass --name OWNER/NAME: the one DIR defines",
    )


def with_environment(docs: list[pods.Document], name: str) -> list[pods.Document]:
    """Copies of the documents where a pod template that names no environment and has a
    container without an image (it can only run on an environment) names `name`. Unlike
    `floxk apply --env`, image workloads in the same files stay image workloads."""
    out = []
    for doc in docs:
        body = copy.deepcopy(doc.body)
        template = pods.pod_template(body)
        if template is not None and isinstance(template.get("spec"), dict):
            spec = template["spec"]
            containers = [
                c
                for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                if isinstance(c, dict)
            ]
            meta = template.setdefault("metadata", {})
            annotations = meta.get("annotations") if isinstance(meta, dict) else None
            if (
                isinstance(meta, dict)
                and spec.get("runtimeClassName") in (None, kube.RUNTIME_CLASS)
                and any(not c.get("image") for c in containers)
                and not (annotations or {}).get(pods.ENV_ANNOTATION)
            ):
                meta["annotations"] = {**(annotations or {}), pods.ENV_ANNOTATION: name}
        out.append(pods.Document(body, doc.source, doc.line))
    return out


def stamp(body: dict[str, Any], *, name: str, generation: int) -> bool:
    """Point a filled-in object's pod template at `generation` of environment `name`
    (OWNER/NAME), in place: a pinned ref gets the generation, and every template using
    the environment gets floxk.dev/generation (a changed template is a rollout, as
    `kubectl rollout restart`'s annotation is). False, untouched, when it uses another."""
    template = pods.pod_template(body)
    if template is None:
        return False
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    ref = annotations.get(pods.ENV_ANNOTATION)
    if not isinstance(ref, str):
        return False
    owner, env, pinned = hub.parse_ref(ref)
    if f"{owner}/{env}" != name:
        return False
    if pinned is not None:
        annotations[pods.ENV_ANNOTATION] = f"{owner}/{env}:{generation}"
    annotations[GENERATION_ANNOTATION] = str(generation)
    return True


def stamped_generation(obj: dict[str, Any] | None) -> str | None:
    """floxk.dev/generation of an object's pod template as the server has it."""
    if obj is None:
        return None
    template = pods.pod_template(copy.deepcopy(obj))
    return (
        ((template or {}).get("metadata") or {}).get("annotations", {}).get(GENERATION_ANNOTATION)
    )


# --- the session ----------------------------------------------------------------------------


class Session:
    """One `floxk dev`: start() publishes and applies, handle() reacts to a Change, watch()
    runs until Ctrl-C or `stop`. The cluster is never cleaned up: what was applied stays."""

    def __init__(
        self,
        directory: Path,
        files: list[str],
        *,
        emit: Emit,
        name: str | None = None,
        context: str | None = None,
        catalog: str | None = None,
        namespace: str | None = None,
        timeout: float = 300,
        logs: bool = True,
    ) -> None:
        from floxk._cluster.devhub import current_dev_hub

        self.directory = Path(directory)
        self.files = [str(f) for f in files]
        self.emit = emit
        self.namespace = namespace
        self.timeout = timeout
        self.watched = Watched.of(self.directory, self.files)
        self.docs = pods.read_documents(self.files)
        self.name = choose_name(self.docs, name)
        dev_hub = current_dev_hub(context)
        self.context = dev_hub.context
        self.builder = EnvBuilder(
            self.directory,
            self.name,
            hub_url=dev_hub.url,
            signing_key=dev_hub.signing_key,
            catalog=catalog,
        )
        self.api = kube.api_client(self.context)
        self.client = kube.dynamic(self.api)
        self.default_namespace = kube.context_namespace(self.context)
        self.applied_generation: int | None = None
        self._follow_stop: threading.Event | None = None
        self._follow_thread: threading.Thread | None = None
        self.logs = _LogTail(self.api, emit) if logs else None

    # each step reports what went wrong and returns None: the loop goes on

    def start(self) -> None:
        self.handle(Change(env=True, manifests=True), initial=True)

    def handle(self, change: Change, *, initial: bool = False) -> None:
        started = time.monotonic()
        if change.manifests and not initial:
            try:
                self.docs = pods.read_documents(self.files)
            except FloxkError as e:
                self.emit(Problem("files", e.message, e.hint))
                return
        if change.env:
            built = self._build()
            if built is None:
                return
            if not built.pushed and not change.manifests and self.applied_generation is not None:
                return  # the lock is the one running: nothing to move
        if self.builder.generation is None:
            return  # never built: nothing to apply yet (a problem was reported)
        self._apply(started)

    def _build(self) -> Built | None:
        self.emit(Step(f"locking {self.directory / ENV_FILE}"))
        try:
            built = self.builder.build()
        except FloxkError as e:
            source = {"ManifestError": "manifest", "LockError": "lock"}.get(
                type(e).__name__, "lock"
            )
            hint = e.hint or "fix it and save again"
            if self.applied_generation is not None:
                hint += f" (nothing was pushed: the pods keep generation {self.applied_generation})"
            self.emit(Problem(source, e.message, hint))
            return None
        self.emit(built)
        return built

    def _apply(self, started: float) -> None:
        generation = self.builder.generation
        assert generation is not None
        try:
            plan = applying.plan(
                self.api,
                with_environment(self.docs, self.name),
                namespace=self.namespace,
                default_namespace=self.default_namespace,
                client=self.client,
            )
            using = [
                o
                for o in plan.objects
                if o.flox and stamp(o.body, name=self.name, generation=generation)
            ]
            replace = [o for o in using if o.kind in REPLACED_KINDS and self._moved(o, generation)]
            checked = applying.Plan(
                objects=[o for o in plan.objects if o not in replace],
                absent_namespaces=plan.absent_namespaces,
                defined_namespaces=plan.defined_namespaces,
            )
            # floxk dev owns what it runs: fields another manager set are taken over
            applying.check(
                self.api, checked, create_namespaces=True, force=True, client=self.client
            )
            if replace:
                applying.delete(
                    self.api,
                    [pods.Document(o.body, o.doc.source, o.doc.line) for o in replace],
                    grace_period=0,
                    timeout=self.timeout,
                )
            applied = applying.apply(
                self.api, plan, create_namespaces=True, force=True, client=self.client
            )
        except FloxkError as e:
            self.emit(Problem("apply", e.message, e.hint))
            return
        moved = {(o.kind, o.namespace, o.name) for o in using}
        for a in applied:
            if (a.kind, a.namespace, a.name) in moved and a.action != "unchanged":
                how = "replaced" if a.kind in REPLACED_KINDS else "rolling out"
                self.emit(Step(f"{a.identity} {a.action}: {how} on generation {generation}"))
            elif a.action != "unchanged":
                self.emit(Step(f"{a.identity} {a.action}"))
        self.applied_generation = generation
        workloads = [(a.kind, a.namespace, a.name) for a in applied if a.kind in applying.WORKLOADS]
        if self.logs is not None:
            self.logs.select(plan.objects)
        self._follow(generation, workloads, started)

    def _moved(self, o: applying.Planned, generation: int) -> bool:
        """Whether a replaced-kind object on the server runs another generation (or another
        spec); absent objects are simply applied."""
        resource = kube.resource_for(self.client, o.body["apiVersion"], o.kind)
        found = kube.get_or_none(self.client, resource, o.name, o.namespace, what=o.identity)
        if found is None:
            return False
        if stamped_generation(found.to_dict()) != str(generation):
            return True
        try:  # same generation: replaced only when the file's spec changed
            applying.check(
                self.api,
                applying.Plan([o], [], []),
                create_namespaces=True,
                force=True,
                client=self.client,
            )
        except kube.KubeError as e:
            return e.status == 422
        return False

    def _follow(self, generation: int, workloads: list, started: float) -> None:
        self.stop_following()
        if not workloads:
            return
        stop = threading.Event()

        def run() -> None:
            def on_change(statuses) -> None:
                if not stop.is_set():
                    self.emit(Rollout(generation, statuses))

            try:
                statuses = applying.follow(
                    self.api, workloads, timeout=self.timeout, on_change=on_change, stop=stop
                )
            except applying.FollowTimeout as e:
                self.emit(Problem("rollout", e.message, e.hint))
                return
            except FloxkError as e:
                if not stop.is_set():
                    self.emit(Problem("rollout", e.message, e.hint))
                return
            if stop.is_set():
                return
            self.emit(Rollout(generation, statuses, done=True, seconds=time.monotonic() - started))
            for s in statuses:
                if s.failed:
                    self.emit(_pod_problem(self.api, s))

        self._follow_stop = stop
        self._follow_thread = threading.Thread(target=run, name="floxk-dev-follow", daemon=True)
        self._follow_thread.start()

    def stop_following(self) -> None:
        if self._follow_stop is not None:
            self._follow_stop.set()
        if self._follow_thread is not None:
            self._follow_thread.join(timeout=5)
        self._follow_stop = self._follow_thread = None

    def wait_rollout(self, timeout: float | None = None) -> None:
        """Until the current rollout's follow has ended (tests, benchmarks)."""
        if self._follow_thread is not None:
            self._follow_thread.join(timeout)

    def watch(self, stop: threading.Event | None = None) -> None:
        """React to every change until `stop` is set or Ctrl-C (KeyboardInterrupt ends it
        quietly); then stop following. Nothing is deleted."""
        try:
            for change in changes(self.watched, stop=stop):
                self.handle(change)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.stop_following()
        if self.logs is not None:
            self.logs.stop()


def _pod_problem(api, s: applying.WorkloadStatus) -> Problem:
    """A failed workload as a Problem: its failing pod's events carry the runtime's
    `floxk:` message."""
    events = applying.failing_pod_events(api, s)
    details = [m for m in ([s.message] if s.message else [])]
    details += [f"{e['reason']}: {e['message']}" for e in events if e["type"] == "Warning"]
    runtime = any("floxk:" in d for d in details)
    hint = (
        "the runtime's `floxk:` message says what is wrong with the environment; fix "
        "manifest.toml and save again"
        if runtime
        else f"kubectl describe pod -n {s.namespace} {s.pod}; kubectl logs -n {s.namespace} {s.pod}"
    )
    return Problem(
        "pod",
        f"{s.identity} failed: {s.reason or s.phase}" + (f" (pod {s.pod})" if s.pod else ""),
        hint,
        details=list(dict.fromkeys(details)),
    )


# --- logs ------------------------------------------------------------------------------------


class _LogTail:
    """Every container log of the pods of the applied workloads, as LogLine events (stern's
    model: a watch on the pods, a follower per container start)."""

    def __init__(self, api, emit: Emit) -> None:
        self.api = api
        self.emit = emit
        self._lock = threading.Lock()
        self._selectors: list[tuple[str, dict[str, str] | None, str | None]] = []
        self._namespaces: set[str] = set()
        self._streams = applying.Streams()
        self._started: set[tuple[str, str, int]] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._pump, name="floxk-dev-pods", daemon=True)]
        self._threads[0].start()

    def select(self, objects: list[applying.Planned]) -> None:
        from kubernetes import client

        selectors: list[tuple[str, dict[str, str] | None, str | None]] = []
        for o in objects:
            if o.namespace is None:
                continue  # cluster-scoped: runs no pods
            if o.kind == "Pod":
                selectors.append((o.namespace, None, o.name))
            elif o.kind == "Job":
                selectors.append((o.namespace, {"job-name": o.name}, None))
            elif o.kind in applying.WORKLOADS and o.kind != "CronJob":
                labels = ((o.body.get("spec") or {}).get("selector") or {}).get("matchLabels")
                if isinstance(labels, dict) and labels:
                    selectors.append((o.namespace, dict(labels), None))
        with self._lock:
            self._selectors = selectors
            for ns in {s[0] for s in selectors} - self._namespaces:
                self._namespaces.add(ns)
                self._streams.add(("Pod", ns), client.CoreV1Api(self.api).list_namespaced_pod, ns)

    def _wanted(self, pod) -> bool:
        labels = pod.metadata.labels or {}
        with self._lock:
            for ns, match, name in self._selectors:
                if ns != pod.metadata.namespace:
                    continue
                if name is not None and name == pod.metadata.name:
                    return True
                if match is not None and all(labels.get(k) == v for k, v in match.items()):
                    return True
        return False

    def _pump(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                _key, type_, pod = self._streams.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if type_ in ("error", "DELETED") or not self._wanted(pod):
                continue
            for c in (pod.status.init_container_statuses or []) + (
                pod.status.container_statuses or []
            ):
                state = c.state
                running = state and (
                    state.running
                    or (state.terminated and state.terminated.reason not in pods.NEVER_STARTED)
                )
                key = (pod.metadata.uid, c.name, c.restart_count or 0)
                if running and key not in self._started:
                    self._started.add(key)
                    tail = threading.Thread(
                        target=self._tail,
                        args=(pod.metadata.namespace, pod.metadata.name, c.name),
                        name=f"floxk-dev-log {pod.metadata.name}/{c.name}",
                        daemon=True,
                    )
                    self._threads.append(tail)
                    tail.start()

    def _tail(self, ns: str, name: str, container: str) -> None:
        try:
            for line in pods.logs(self.api, name, ns, container, opening=self._streams.opening):
                if self._stop.is_set():
                    return
                self.emit(LogLine(ns, name, container, line))
        except FloxkError:
            return  # the pod went away
        except Exception:
            if not self._stop.is_set():
                raise
            # stop() shut its read down

    def stop(self) -> None:
        """Ends the pod watch and every log follow (their reads are shut down), then joins
        them: no thread of ours is left reading when `floxk dev` exits."""
        self._stop.set()
        self._streams.stop()
        self._threads[0].join(applying.Streams.JOIN_TIMEOUT)  # the pump: it starts no tail after
        for t in self._threads[1:]:
            t.join(applying.Streams.JOIN_TIMEOUT)
