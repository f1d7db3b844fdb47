"""How `floxk up` picks its kind base (floxk/_cluster/kindimage.py), against the real Engine.

No internet and no public registry here, so the three states are made for real:
"present" is an image under the base's name in the local Docker Engine (tiny images made
with `docker import`, under private names and a per-test Kubernetes version, so nothing of
the machine's own is looked at or touched); "pullable" is the CNCF distribution registry
(conftest `registry`) serving it; "absent" is neither (a registry port nobody serves), which
falls back to the offline build. The decision is asserted as data; only the pull is carried
out (a tiny image), never the 15-minute offline build.
"""

from __future__ import annotations

import io
import tarfile
import uuid

import pytest

from floxk._cluster import kindimage, nodeimage
from shim.core.errors import ConfigError, NotFoundError
from testkit.net import free_port


@pytest.fixture
def version():
    return f"v0.0.{uuid.uuid4().int % 10**8}"


@pytest.fixture
def images(docker_client):
    """make(ref, labels): a tiny image in the local Engine; make.track(ref): one a test made
    appear by pulling or tagging. All removed afterwards."""
    made: list[str] = []

    def make(ref: str, labels: dict[str, str] | None = None) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("etc/kind-base-test")
            data = ref.encode()  # unique content: a unique image id
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        repo, tag = ref.rsplit(":", 1)
        changes = [f"LABEL {k}={v}" for k, v in (labels or {}).items()]
        docker_client.api.import_image_from_data(
            buf.getvalue(), repository=repo, tag=tag, changes=changes
        )
        made.append(ref)
        return ref

    make.track = made.append  # type: ignore[attr-defined]
    yield make
    for ref in made:
        try:
            docker_client.images.remove(ref, force=True)
        except Exception:
            pass


@pytest.fixture
def upstream_repo(monkeypatch):
    """A private upstream repository name (as a mirror would be set)."""
    repo = f"floxk-test.local/kind-base-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(kindimage.REPO_ENV, repo)
    return repo


@pytest.fixture
def unpullable(monkeypatch):
    """Upstream's repository on a registry port nobody serves: "cannot be pulled"."""
    repo = f"localhost:{free_port()}/kindest/node"
    monkeypatch.setenv(kindimage.REPO_ENV, repo)
    return repo


def test_upstream_present_locally_is_used_and_preferred(
    docker_client, images, upstream_repo, version
):
    up = images(f"{upstream_repo}:{version}")
    images(kindimage.offline_tag(version), {kindimage.OFFLINE_LABEL: "k"})
    choice = kindimage.decide(docker_client, version, buildable=[version])
    assert (choice.action, choice.image, choice.source) == ("use", up, "upstream")
    assert "in the local Docker Engine" in choice.reason
    assert kindimage.obtain(docker_client, choice, version) == up


def test_offline_build_present_is_used_without_asking_a_registry(
    docker_client, images, unpullable, version
):
    offline = images(kindimage.offline_tag(version), {kindimage.OFFLINE_LABEL: "k"})
    for source in ("auto", "offline"):
        choice = kindimage.decide(docker_client, version, source=source, buildable=[])
        assert (choice.action, choice.image, choice.source) == ("use", offline, "offline"), source
        assert "offline build" in choice.reason


def test_absent_locally_but_pullable_is_pulled(
    docker_client, images, registry, monkeypatch, version
):
    repo = f"{registry}/kindest/node"
    monkeypatch.setenv(kindimage.REPO_ENV, repo)
    ref = images(f"{repo}:{version}")
    docker_client.images.push(repo, tag=version)
    docker_client.images.remove(ref)
    assert kindimage.look(docker_client, ref) is None
    lines: list[str] = []
    for source in ("auto", "upstream"):
        choice = kindimage.decide(docker_client, version, source=source, buildable=[version])
        assert (choice.action, choice.image, choice.source) == ("pull", ref, "upstream"), source
        assert "its registry has it" in choice.reason
    images.track(ref)
    assert kindimage.obtain(docker_client, choice, version, progress=lines.append) == ref
    assert kindimage.look(docker_client, ref) is not None
    assert f"pulling {ref}" in lines and any("layer(s) done" in line for line in lines), lines
    # Now local: the next `up` uses it without a pull.
    assert kindimage.decide(docker_client, version, buildable=[]).action == "use"


def test_absent_and_unpullable_falls_back_to_the_offline_build(docker_client, unpullable, version):
    choice = kindimage.decide(docker_client, version, buildable=[version])
    assert (choice.action, choice.image, choice.source) == (
        "build",
        kindimage.offline_tag(version),
        "offline",
    )
    assert f"{unpullable}:{version} is not in the local Engine; pulling failed:" in choice.reason


def test_nothing_left_says_what_was_tried(docker_client, unpullable, version):
    with pytest.raises(NotFoundError, match="cannot be pulled .* cannot build") as e:
        kindimage.decide(docker_client, version, buildable=["v1.37.2"])
    assert "v1.37.2" in e.value.hint and "--base-image" in e.value.hint
    with pytest.raises(NotFoundError, match="cannot be pulled") as e:
        kindimage.decide(docker_client, version, source="upstream", buildable=[version])
    assert "--base-source offline" in e.value.hint


def test_offline_never_uses_or_pulls_upstream(docker_client, images, upstream_repo, version):
    images(f"{upstream_repo}:{version}")
    choice = kindimage.decide(docker_client, version, source="offline", buildable=[version])
    assert (choice.action, choice.source) == ("build", "offline")
    assert "--base-source offline" in choice.reason, choice.reason
    with pytest.raises(NotFoundError, match="cannot build"):
        kindimage.decide(docker_client, version, source="offline", buildable=[])


def test_offline_build_under_the_upstream_name_is_never_taken_for_upstream(
    docker_client, images, upstream_repo, unpullable, version
):
    # What older floxk did: its offline build tagged kindest/node:<version>.
    legacy = images(f"{unpullable}:{version}", {kindimage.OFFLINE_LABEL: "k"})
    choice = kindimage.decide(docker_client, version, buildable=[])
    assert (choice.action, choice.image, choice.source) == (
        "tag",
        kindimage.offline_tag(version),
        "offline",
    )
    assert "not upstream's" in choice.reason
    images.track(choice.image)
    assert kindimage.obtain(docker_client, choice, version) == kindimage.offline_tag(version)
    assert docker_client.images.get(choice.image).id == docker_client.images.get(legacy).id
    # Asked for upstream's only, the legacy image does not count: a pull is tried (and fails here).
    with pytest.raises(NotFoundError, match="cannot be pulled"):
        kindimage.decide(docker_client, version, source="upstream", buildable=[])


def test_a_floxk_node_image_is_refused_as_a_base(docker_client, images, version):
    node = images(f"floxk-test.local/node:{version}", {kindimage.NODE_LABEL: "true"})
    with pytest.raises(ConfigError, match="is a floxk node image"):
        kindimage.decide(docker_client, version, given=node)
    with pytest.raises(ConfigError, match="is a floxk node image"):
        nodeimage.build_node_image(node, client=docker_client)


def test_given_base_image(docker_client, images, version):
    given = images(f"floxk-test.local/my-kind:{version}")
    choice = kindimage.decide(docker_client, version, given=given)
    assert (choice.action, choice.image, choice.source) == ("use", given, "given")
    missing = f"localhost:{free_port()}/my/kind:{version}"
    with pytest.raises(NotFoundError, match="cannot be pulled"):
        kindimage.decide(docker_client, version, given=missing)
    with pytest.raises(ConfigError, match="both say where the base comes from"):
        kindimage.decide(docker_client, version, given=given, source="offline")


def test_base_source_setting(monkeypatch):
    monkeypatch.delenv(kindimage.SOURCE_ENV, raising=False)
    assert kindimage.source_setting(None) == "auto"
    monkeypatch.setenv(kindimage.SOURCE_ENV, "offline")
    assert kindimage.source_setting(None) == "offline"
    assert kindimage.source_setting("upstream") == "upstream"  # the flag wins
    monkeypatch.setenv(kindimage.SOURCE_ENV, "sometimes")
    with pytest.raises(ConfigError, match=r"\$FLOXK_BASE_SOURCE is 'sometimes'"):
        kindimage.source_setting(None)
    with pytest.raises(ConfigError, match="--base-source is 'never'"):
        kindimage.source_setting("never")


def test_the_two_names_differ(monkeypatch):
    monkeypatch.delenv(kindimage.REPO_ENV, raising=False)
    assert kindimage.upstream_tag("v1.37.2") == "kindest/node:v1.37.2"
    assert kindimage.offline_tag("v1.37.2") == "floxk.local/kind-node:v1.37.2"
    # The offline build tags what floxk looks for under the offline name.
    text = (kindimage.kind_dir() / "versions.env").read_text()
    assert "IMAGE_REPO=${FLOXK_KIND_IMAGE_REPO:-floxk.local/kind-node}" in text
