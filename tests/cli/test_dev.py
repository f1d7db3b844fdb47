"""`floxk dev`'s core without a cluster: what a file change triggers (real files, real
watchfiles), generation bumping and error reporting with a real lock (Nix, the test
catalog) and a real push to a signed file:// hub, and how pod templates are moved."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from floxk import _dev
from floxk._cluster import pod as pods
from shim.core import hub
from shim.core.errors import FloxkError, LockError, ManifestError
from tests.manifests import workload

ENV = 'version = 1\n[install]\nbusybox.pkg-path = "busybox"\n[vars]\nGREETING = "one"\n'
DEPLOYMENT = workload("Deployment", "web", "containers: [{name: web, command: [sleep, infinity]}]\n",
                      replicas=2, annotations='{flox.dev/environment: "%s"}')  # fmt: skip


def _save(path: Path, text: str) -> None:
    """Write the way editors save: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- what a change triggers ---------------------------------------------------------------


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path, Path]:
    env = tmp_path / "env"
    env.mkdir()
    (env / "manifest.toml").write_text(ENV)
    k8s = tmp_path / "k8s"
    k8s.mkdir()
    (k8s / "web.yaml").write_text(DEPLOYMENT % "dev/web")
    single = tmp_path / "svc.yaml"
    single.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n")
    return env, k8s, single


def test_classify_names_what_each_path_triggers(project):
    env, k8s, single = project
    w = _dev.Watched.of(env, [str(k8s), str(single)])
    assert w.classify([env / "manifest.toml"]) == _dev.Change(env=True)
    assert w.classify([k8s / "web.yaml", single]) == _dev.Change(manifests=True)
    assert w.classify([k8s / "new.yml"]) == _dev.Change(manifests=True)  # a file added to -f DIR
    # what lock writes, editors' swap files, other files: nothing
    for ignored in [
        env / "manifest.lock",
        env / ".manifest.lock.x1",
        env / ".manifest.toml.swp",
        k8s / ".web.yaml.swp",
        k8s / "README.md",
        single.parent / "other.yaml",
        k8s / "sub" / "deep.yaml",
    ]:
        assert not w.classify([ignored]), ignored
    both = w.classify([env / "manifest.toml", single])
    assert both.env and both.manifests
    assert set(w.roots()) == {env.resolve(), k8s.resolve(), single.parent.resolve()}


def test_watched_refuses_stdin_and_missing_files(project):
    env, _k8s, _single = project
    with pytest.raises(FloxkError, match="stdin"):
        _dev.Watched.of(env, ["-"])
    with pytest.raises(FloxkError, match="does not exist"):
        _dev.Watched.of(env, [str(env / "nope.yaml")])


def test_changes_from_real_file_events(project):
    """watchfiles on real directories: an editor's save of manifest.toml is one env change;
    manifest.lock written by lock is none; a manifest edit is a manifests change."""
    env, k8s, single = project
    w = _dev.Watched.of(env, [str(k8s), str(single)])
    stop = threading.Event()
    seen: list[_dev.Change] = []

    def collect():
        for change in _dev.changes(w, stop=stop):
            seen.append(change)
            if len(seen) == 2:
                stop.set()

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    time.sleep(0.5)  # the watch is set up
    (env / "manifest.lock").write_text("{}")  # ignored
    (env / "notes.txt").write_text("x")  # ignored
    _save(env / "manifest.toml", ENV.replace("one", "two"))
    time.sleep(1.0)
    _save(k8s / "web.yaml", DEPLOYMENT % "dev/web:2")
    thread.join(10)
    stop.set()
    assert seen == [_dev.Change(env=True), _dev.Change(manifests=True)]


# --- pod templates ----------------------------------------------------------------------------


def _deployment(ref: str) -> dict:
    docs = pods.parse_documents(DEPLOYMENT % ref, "web.yaml")
    return pods.fill_object(docs[0].body)


def test_stamp_bumps_pinned_refs_and_marks_every_template():
    pinned = _deployment("dev/web:3")
    assert _dev.stamp(pinned, name="dev/web", generation=7)
    annotations = pinned["spec"]["template"]["metadata"]["annotations"]
    assert annotations[pods.ENV_ANNOTATION] == "dev/web:7"
    assert annotations[_dev.GENERATION_ANNOTATION] == "7"
    assert _dev.stamped_generation(pinned) == "7"

    unpinned = _deployment("dev/web")
    assert _dev.stamp(unpinned, name="dev/web", generation=7)
    annotations = unpinned["spec"]["template"]["metadata"]["annotations"]
    assert annotations[pods.ENV_ANNOTATION] == "dev/web"  # nodes resolve latest
    assert annotations[_dev.GENERATION_ANNOTATION] == "7"  # the template changed: a rollout

    other = _deployment("dev/db:2")
    before = json.dumps(other, sort_keys=True)
    assert not _dev.stamp(other, name="dev/web", generation=7)
    assert json.dumps(other, sort_keys=True) == before
    assert not _dev.stamp(
        {"kind": "Service", "metadata": {"name": "x"}}, name="dev/web", generation=1
    )


def test_choose_name_from_the_manifests():
    docs = pods.parse_documents(
        DEPLOYMENT % "dev/web:2"
        + "---\n"
        + (DEPLOYMENT % "dev/web").replace("name: web}", "name: w2}"),
        "a.yaml",
    )
    assert _dev.choose_name(docs, None) == "dev/web"
    assert _dev.choose_name(docs, "me/other") == "me/other"
    two = docs + pods.parse_documents(
        (DEPLOYMENT % "dev/db").replace("name: web}", "name: db}"), "b.yaml"
    )
    with pytest.raises(FloxkError, match="2 environments: dev/web, dev/db") as e:
        _dev.choose_name(two, None)
    assert "--name" in e.value.hint
    none = pods.parse_documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "c.yaml")
    with pytest.raises(FloxkError, match="name no environment"):
        _dev.choose_name(none, None)


# --- manifest.toml -> generations (real Nix, real signed file:// hub) --------------------------


@pytest.fixture
def builder(tmp_path, catalog_flake, signed_cache):
    from floxk._lock import lock_environment

    directory = tmp_path / "env"
    directory.mkdir()
    (directory / "manifest.toml").write_text(ENV)
    # locked once by hand with --catalog, as a user would before `floxk dev`
    lock_environment(directory, catalog=f"path:{catalog_flake}")
    name = f"dev/web-{tmp_path.name[-20:].replace('_', '-')}"
    return _dev.EnvBuilder(
        directory, name, hub_url=signed_cache.url, signing_key=signed_cache.secret_key_file
    )


@pytest.mark.nix
def test_catalog_is_the_one_the_lock_was_made_with(builder, catalog_flake):
    catalog = _dev.catalog_of(builder.directory)
    assert catalog is not None and catalog.startswith(f"path:{catalog_flake}")
    assert _dev.catalog_of(builder.directory.parent) is None  # no lock there


@pytest.mark.nix
def test_generations_bump_only_when_the_lock_changes(builder, signed_cache):
    first = builder.build()  # no --catalog: the lock's catalog
    assert first.pushed and first.generation == 1 and first.paths >= 1
    assert hub.fetch(builder.name, [signed_cache.url], None).generation == 1

    again = builder.build()
    assert not again.pushed and again.generation == 1  # nothing new published
    assert hub.fetch(builder.name, [signed_cache.url], None).generation == 1

    _save(builder.directory / "manifest.toml", ENV.replace('"one"', '"two"'))
    second = builder.build()
    assert second.pushed and second.generation == 2
    record = hub.fetch(builder.name, [signed_cache.url], None).parsed()
    assert record.generation == 2 and record.lock.manifest.vars["GREETING"] == "two"

    # a new session (floxk dev run again) adopts the published generation: no push
    fresh = _dev.EnvBuilder(
        builder.directory,
        builder.name,
        hub_url=signed_cache.url,
        signing_key=signed_cache.secret_key_file,
    )
    adopted = fresh.build()
    assert not adopted.pushed and adopted.generation == 2

    _save(
        builder.directory / "manifest.toml",
        ENV.replace(
            'busybox.pkg-path = "busybox"\n',
            'busybox.pkg-path = "busybox"\nhello.pkg-path = "hello"\n',
        ),
    )
    third = fresh.build()
    assert third.pushed and third.generation == 3
    record = hub.fetch(builder.name, [signed_cache.url], None).parsed()
    assert {p.install_id for p in record.lock.packages} == {"busybox", "hello"}


@pytest.mark.nix
def test_a_broken_manifest_pushes_nothing_and_names_the_line(builder, signed_cache):
    builder.build()
    lock_before = (builder.directory / "manifest.lock").read_text()
    _save(builder.directory / "manifest.toml", ENV.replace('GREETING = "one"', "GREETING = one"))
    with pytest.raises(ManifestError) as e:
        builder.build()
    assert "line 5" in e.value.message and "GREETING" in e.value.message
    assert hub.fetch(builder.name, [signed_cache.url], None).generation == 1
    assert (builder.directory / "manifest.lock").read_text() == lock_before

    broken = ENV.replace("[vars]", 'nope.pkg-path = "no-such-package"\n[vars]')
    _save(builder.directory / "manifest.toml", broken)
    with pytest.raises(LockError, match="no-such-package"):
        builder.build()
    assert hub.fetch(builder.name, [signed_cache.url], None).generation == 1

    _save(builder.directory / "manifest.toml", ENV.replace("one", "fixed"))
    assert builder.build().generation == 2  # the loop goes on from where it was


@pytest.mark.nix
def test_builder_refuses_a_pinned_name(tmp_path, signed_cache):
    with pytest.raises(FloxkError, match="names a generation"):
        _dev.EnvBuilder(tmp_path, "dev/web:3", hub_url=signed_cache.url, signing_key=None)


def test_with_environment_fills_only_templates_that_need_one():
    text = (
        (DEPLOYMENT % "x/y").replace('      annotations: {flox.dev/environment: "x/y"}\n', "")
        + "---\n"
        + (DEPLOYMENT % "dev/other").replace("name: web}", "name: other}")
        + "---\n"
        + "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: db}\nspec:\n"
        "  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n"
        "    spec: {containers: [{name: db, image: postgres:17}]}\n"
    )
    docs = pods.parse_documents(text, "all.yaml")
    assert pods.ENV_ANNOTATION not in json.dumps(docs[0].body)
    filled = _dev.with_environment(docs, "dev/web")
    refs = [
        (pods.pod_template(d.body)["metadata"].get("annotations") or {}).get(pods.ENV_ANNOTATION)
        for d in filled
    ]
    assert refs == ["dev/web", "dev/other", None]  # the image workload stays one
    assert pods.ENV_ANNOTATION not in json.dumps(docs[0].body)  # the originals untouched
    assert [d.where for d in filled] == [d.where for d in docs]


def test_a_latest_generation_in_an_older_format_is_pushed_over(tmp_path, signed_cache, builder):
    """A dev hub kept from an older floxk holds unsigned records: dev pushes anew."""
    hub_dir = Path(signed_cache.url.removeprefix("file://")) / hub.env_dir(*builder.name.split("/"))
    hub_dir.mkdir(parents=True, exist_ok=True)
    (hub_dir / "3.json").write_text('{"floxk-hub-record": 1, "owner": "x"}')
    (hub_dir / "latest").write_text("3\n")
    assert builder.published() is None
    builder.build()
    assert hub.fetch(builder.name, [signed_cache.url], None).generation == 4
