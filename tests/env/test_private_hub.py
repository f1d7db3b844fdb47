"""Private environments, Flox's way, at the node's one gate (shim.runc.fetch_for +
realize_record) with real Nix and a real nginx that enforces a token (tests/privatehub.py).

A create's tokens come from the container's own spec: the mount at
/var/run/secrets/flox.dev (a Secret volume laid out as kubelet writes it). The same cases
through floxk-runc are in tests/shim/test_private_create.py, through containerd in
tests/cri/test_private_pods.py.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from shim.core import auth, hub, proc
from shim.core.annotations import EnvRef
from shim.core.errors import AccessError, ConfigError
from shim.core.node import Credential, NodeConfig
from shim.core.service import fetch_for, realize_record
from testkit.nix import run_with_store
from testkit.oci import hub_node_config
from tests import privatehub

pytestmark = [pytest.mark.nix, pytest.mark.root]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with privatehub.served_hub(tmp_path_factory.mktemp("private-hub")) as served:
        yield served


def node(tmp_path, server, published, **overrides) -> NodeConfig:
    credentials = [Credential(url=server.url, auth="pod-token")]
    return hub_node_config(
        tmp_path, server.url, server.url, published.key, **{"credentials": credentials, **overrides}
    )


def pod_spec(tmp_path, token: str | None, *, mount: bool = True) -> dict:
    """config.json of a pod's container: its sandbox uid and, with `mount`, a Secret
    volume at Flox's path (holding `token`, or no floxhub-token key when None)."""
    uid = uuid.uuid4().hex
    spec: dict = {"annotations": {"io.kubernetes.cri.sandbox-uid": uid}, "mounts": []}
    if mount:
        source = privatehub.secret_volume(tmp_path / uid, uid, token)
        spec["mounts"].append(privatehub.token_mount(source))
    return spec


def create(cfg: NodeConfig, spec: dict, ref: str = "acme/private"):
    """What floxk-runc's create does for the environment: fetch with the pod's tokens,
    realize (or find) the tree."""
    access = auth.access_for(cfg, spec)
    found = fetch_for(EnvRef(*hub.parse_ref(ref)), cfg, access=access)
    return realize_record(found, cfg, access=access)


def trees(cfg: NodeConfig) -> list[str]:
    envs = Path(cfg.state_dir) / "envs"
    return sorted(p.name for p in envs.iterdir()) if envs.exists() else []


def test_right_token_realizes_and_runs(tmp_path, served):
    published, server = served
    cfg = node(tmp_path, server, published)
    env = create(cfg, pod_spec(tmp_path, privatehub.TOKEN))
    assert env.activation["vars"] == {"WHO": "private"}
    ran = run_with_store(tmp_path / "store", [str(env.path / "bin" / "hello")])
    assert ran.stdout == "hello from floxk\n", ran.stderr
    forms = {(status, form) for status, form, _ in server.requests()}
    assert ("200", "bearer") in forms  # floxk's own requests: the hub's files
    assert ("200", "basic") in forms  # Nix's, through the private netrc file


@pytest.mark.parametrize(
    "token, mount, says",
    [
        (None, False, "requires a token for acme/private and this pod has none (HTTP 401)"),
        (privatehub.WRONG, True, "refused this pod's floxhub-token for acme/private (HTTP 401)"),
        (None, True, "the volume at /var/run/secrets/flox.dev holds no floxhub-token"),
    ],
)
def test_wrong_or_missing_token_is_refused(tmp_path, served, token, mount, says):
    published, server = served
    cfg = node(tmp_path, server, published)
    with pytest.raises(AccessError) as e:
        create(cfg, pod_spec(tmp_path, token, mount=mount))
    assert says in str(e.value)
    assert e.value.hint
    assert trees(cfg) == []
    assert privatehub.WRONG not in str(e.value)


def test_a_pod_without_the_token_on_a_warm_node_is_refused(tmp_path, served):
    """Authorization is per pod: the tree another pod realized does not start for a pod the
    hub refuses; the record fetch with that pod's token is the check."""
    published, server = served
    cfg = node(tmp_path, server, published)
    first = create(cfg, pod_spec(tmp_path, privatehub.TOKEN))
    assert trees(cfg) == [first.digest]
    for token, mount in [(None, False), (privatehub.WRONG, True)]:
        with pytest.raises(AccessError, match="HTTP 401"):
            create(cfg, pod_spec(tmp_path, token, mount=mount))
    # And the pinned generation is no way around it.
    with pytest.raises(AccessError, match="HTTP 401"):
        create(cfg, pod_spec(tmp_path, None, mount=False), "acme/private:1")
    assert create(cfg, pod_spec(tmp_path, privatehub.TOKEN)).digest == first.digest


def test_positive_answers_are_kept_briefly_per_token(tmp_path, served):
    published, server = served
    cfg = node(tmp_path, server, published, token_cache_ttl=300.0)
    spec = pod_spec(tmp_path, privatehub.TOKEN)
    create(cfg, spec)
    asked = len(server.requests())
    create(cfg, pod_spec(tmp_path, privatehub.TOKEN))  # another pod, the same token
    assert len(server.requests()) == asked  # latest and the pointer came from the cache
    with pytest.raises(AccessError):  # another token is asked for again, and refused
        create(cfg, pod_spec(tmp_path, privatehub.WRONG))
    assert len(server.requests()) > asked
    ok = Path(cfg.state_dir) / auth.AUTH_DIR / "ok"
    cached = [p for p in ok.rglob("*") if p.is_file()]
    assert cached, "nothing remembered"
    stale = ok / ("0" * 40) / "gone"  # another token's answer, long past the TTL
    stale.parent.mkdir()
    stale.write_text("1\n")
    for old in [*cached, stale]:
        os.utime(old, (1, 1))
    asked = len(server.requests())
    create(cfg, pod_spec(tmp_path, privatehub.TOKEN))
    assert len(server.requests()) > asked  # an answer past the TTL is not used
    assert not stale.parent.exists()  # and pruned at that miss
    assert all(p.stat().st_mtime > 1 for p in ok.rglob("*") if p.is_file())
    privatehub.assert_token_nowhere(privatehub.TOKEN, Path(cfg.state_dir))


def test_without_the_cache_every_create_asks(tmp_path, served):
    published, server = served
    cfg = node(tmp_path, server, published, token_cache_ttl=0.0)
    create(cfg, pod_spec(tmp_path, privatehub.TOKEN))
    asked = len(server.requests())
    create(cfg, pod_spec(tmp_path, privatehub.TOKEN))
    assert len(server.requests()) > asked


def test_the_token_reaches_no_argv_state_or_log(tmp_path, served, monkeypatch):
    published, server = served
    cfg = node(tmp_path, server, published)
    argvs: list[list[str]] = []
    real = proc.run_captured

    def recording(argv, **kw):  # the real call, its command line remembered
        argvs.append(list(argv))
        return real(argv, **kw)

    monkeypatch.setattr(proc, "run_captured", recording)
    monkeypatch.setattr("shim.core.nix.run_captured", recording)
    create(cfg, pod_spec(tmp_path, privatehub.TOKEN))
    nix_calls = [a for a in argvs if a and a[0].startswith("nix")]
    assert any("netrc-file" in a for a in nix_calls), nix_calls
    assert not any(privatehub.TOKEN in " ".join(a) for a in argvs)
    netrcs = [a[a.index("netrc-file") + 1] for a in nix_calls if "netrc-file" in a]
    assert netrcs and not any(Path(n).exists() for n in netrcs)  # removed after the call
    privatehub.assert_token_nowhere(privatehub.TOKEN, Path(cfg.state_dir), *server.logs())


def test_the_token_never_follows_a_redirect(tmp_path, served):
    """A hub that sends floxk elsewhere does not get the token sent there."""
    published, server = served
    other = privatehub.Nginx(published.cache, [privatehub.TOKEN], tmp_path / "other").start()
    try:
        mover = privatehub.Nginx(
            published.cache, [privatehub.TOKEN], tmp_path / "mover",
            redirect={"/floxk/envs/": other.url},
        ).start()  # fmt: skip
        try:
            cfg = node(tmp_path, mover, published)  # credentials for the mover only
            with pytest.raises(AccessError, match="HTTP 401"):
                create(cfg, pod_spec(tmp_path, privatehub.TOKEN))
            assert ("302", "bearer") in {(st, form) for st, form, _ in mover.requests()}
            asked = other.requests()
            assert asked and {form for _, form, _ in asked} == {"none"}, asked
        finally:
            mover.stop()
    finally:
        other.stop()


def test_prefetch_and_node_commands_do_not_ask_a_pod_token_hub(tmp_path, served):
    """Without a pod (the sandbox's prefetch, `floxk-node realize`) nothing is realized
    from a pod-token hub: it is not even asked."""
    published, server = served
    cfg = node(tmp_path, server, published)
    asked = len(server.requests())
    with pytest.raises(AccessError, match="needs a pod's floxhub-token"):
        fetch_for(EnvRef("acme", "private"), cfg)
    assert len(server.requests()) == asked and trees(cfg) == []


def test_node_wide_token_from_a_root_only_file(tmp_path, served):
    published, server = served
    token_file = tmp_path / "hub.token"
    token_file.write_text(privatehub.TOKEN + "\n")
    token_file.chmod(0o600)
    cfg = node(
        tmp_path, server, published,
        credentials=[Credential(url=server.url, auth="node-token", token_file=str(token_file))],
    )  # fmt: skip
    env = realize_record(fetch_for(EnvRef("acme", "private"), cfg), cfg)  # no pod needed
    assert env.activation["vars"] == {"WHO": "private"}
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by nobody else"):
        fetch_for(EnvRef("acme", "private"), cfg)
    token_file.chmod(0o600)
    token_file.write_text(privatehub.WRONG)
    with pytest.raises(AccessError, match="refused the node's token"):
        fetch_for(EnvRef("acme", "private"), cfg)


# --- the pod author as attacker: the token comes from the pod's own Secret only ---------------


def _spec_with_source(uid: str, source: Path) -> dict:
    return {
        "annotations": {"io.kubernetes.cri.sandbox-uid": uid},
        "mounts": [privatehub.token_mount(source)],
    }


def test_a_volume_that_is_not_a_secret_of_this_pod_is_refused(tmp_path, served):
    published, server = served
    cfg = node(tmp_path, server, published)
    victim_uid, my_uid = uuid.uuid4().hex, uuid.uuid4().hex
    victim = privatehub.secret_volume(tmp_path / "victim", victim_uid, privatehub.TOKEN)
    empty_dir = tmp_path / "kubelet" / "pods" / my_uid / "volumes" / "kubernetes.io~empty-dir" / "x"
    empty_dir.mkdir(parents=True)
    (empty_dir / "floxhub-token").write_text(privatehub.TOKEN)
    # a hostPath to another pod's Secret; a path shaped like mine that links to it; an
    # emptyDir (written by the pod itself); a hostPath to a node directory.
    looks_mine = tmp_path / "fake" / "pods" / my_uid / "volumes" / "kubernetes.io~secret" / "t"
    looks_mine.parent.mkdir(parents=True)
    looks_mine.symlink_to(victim)
    for source in (victim, looks_mine, empty_dir, Path("/etc")):
        with pytest.raises(AccessError, match="is not a Secret of this pod") as e:
            create(cfg, _spec_with_source(my_uid, source))
        assert privatehub.TOKEN not in str(e.value)
    assert trees(cfg) == []


def test_a_token_linking_out_of_its_volume_is_refused(tmp_path, served):
    published, server = served
    cfg = node(tmp_path, server, published)
    uid = uuid.uuid4().hex
    victim = privatehub.secret_volume(tmp_path / "victim", uuid.uuid4().hex, privatehub.TOKEN)
    mine = privatehub.secret_volume(tmp_path / uid, uid, None)
    (mine / "floxhub-token").symlink_to(victim / "floxhub-token")
    with pytest.raises(AccessError, match="links out of the volume"):
        create(cfg, _spec_with_source(uid, mine))
    (mine / "floxhub-token").unlink()
    (mine / "floxhub-token").write_text("two words\n")
    with pytest.raises(AccessError, match="is not a token"):
        create(cfg, _spec_with_source(uid, mine))
    (mine / "floxhub-token").write_text("x" * (auth.MAX_TOKEN_BYTES + 1))
    with pytest.raises(AccessError, match="larger than"):
        create(cfg, _spec_with_source(uid, mine))
    assert trees(cfg) == []


def test_a_public_hub_next_to_a_private_one_needs_nothing(tmp_path, served):
    """Credentials apply to their URL only: a file:// hub listed first serves its own
    environments to pods without any token."""
    from testkit.oci import publish_test_hub

    published, server = served
    public = publish_test_hub(tmp_path / "public")
    cfg = node(
        tmp_path, server, published,
        hubs=[public.url, server.url], substituters=[public.url, server.url],
        trusted_public_keys=[published.key, public.key],
    )  # fmt: skip
    assert create(cfg, pod_spec(tmp_path, None, mount=False), "acme/plain").activation
    # A volume at Flox's path that is no Secret matters only where a token is needed.
    uid = uuid.uuid4().hex
    (tmp_path / "not-a-secret").mkdir()
    odd = _spec_with_source(uid, tmp_path / "not-a-secret")
    assert create(cfg, odd, "acme/plain").activation
    with pytest.raises(AccessError, match="is not a Secret of this pod"):
        create(cfg, odd)
    with pytest.raises(AccessError, match="this pod has none"):
        create(cfg, pod_spec(tmp_path, None, mount=False))
