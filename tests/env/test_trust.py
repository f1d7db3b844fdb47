"""The node's trust chain against a hub/cache writer without the signing key, real Nix.

Each test publishes with the real `floxk env push` (signed with the test key) and then
attacks the published hub and cache with tests/attacker.py; the node side is the one gate
every entry point uses (shim.core.service: fetch_for / realize_for) with a chroot store and a state
dir of its own. The create path through floxk-runc and containerd is in
tests/shim/test_trust_create.py and tests/cri/test_trust_attacks.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from floxk.cli import main as floxk_main
from shim.core import hub, nix, signatures, storedb
from shim.core.annotations import EnvRef
from shim.core.errors import LockError, NixError, RealizeError, TrustError
from shim.core.lockfile import load_lock, lock_from_dict
from shim.core.model import current_system
from shim.core.node import NodeConfig, Policy
from shim.core.realize import _substitute, realize
from shim.core.service import fetch_for, realize_for, trust_of
from shim.core.tree import build_tree, tree_link
from testkit.nix import make_key_pair, run_with_store
from testkit.oci import hub_node_config, hub_node_toml
from tests import attacker

pytestmark = [pytest.mark.nix, pytest.mark.root]

PLAIN = 'version = 1\n[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n'


def node(tmp_path, signed_cache, **overrides) -> NodeConfig:
    c = signed_cache
    return hub_node_config(tmp_path, c.hub_url, c.url, c.public_key, **overrides)


def ref(text: str) -> EnvRef:
    return EnvRef(*hub.parse_ref(text))


def split(published: str) -> tuple[str, str, int]:
    owner, name, gen = hub.parse_ref(published)
    return owner, name, gen


def assert_nothing_usable(cfg: NodeConfig, store_path: str | None = None) -> None:
    """A refused environment: no tree, no half-built tree, no remembered record; the
    refused store path is not left valid in the store."""
    state = Path(cfg.state_dir)
    for sub in ("envs", "tmp", hub.RECORDS_DIR):
        found = (
            [p for p in (state / sub).rglob("*") if p.is_file()] if (state / sub).exists() else []
        )
        assert found == [], f"{sub}: {found}"
    if store_path is not None:
        assert nix.invalid_paths([store_path], store_root=Path(cfg.store_root)) == [store_path]


def test_valid_environment_realizes_and_runs(tmp_path, signed_cache, publish_env):
    """The control: a test cannot pass by refusing everything."""
    published = publish_env("trust/valid", PLAIN)
    cfg = node(tmp_path, signed_cache)
    env = realize_for(ref("trust/valid"), cfg)
    ran = run_with_store(tmp_path / "store", [str(env.path / "bin" / "hello")])
    assert ran.returncode == 0 and ran.stdout == "hello from floxk\n", ran.stderr
    owner, name, gen = split(published)
    record_path, _ = attacker.record_of(signed_cache.root, owner, name, gen)
    memo = hub._memo_path(trust_of(cfg), record_path)
    assert Path(memo).is_file()  # verified once, remembered by its store path
    seen = Path(cfg.state_dir) / hub.SEEN_DIR
    assert [p.read_text() for p in seen.rglob("valid")] == [f"{gen}\n"]


def test_warm_fetch_trusts_the_remembered_record_without_nix(tmp_path, signed_cache, publish_env):
    publish_env("trust/warm", PLAIN)
    cfg = node(tmp_path, signed_cache)
    first = fetch_for(ref("trust/warm"), cfg)
    # No cache at all now: only the pointer (hub) and the state dir's record are read.
    cfg = node(tmp_path, signed_cache, substituters=[(tmp_path / "no-cache").as_uri()])
    assert fetch_for(ref("trust/warm"), cfg) == first
    # Other keys: what was verified with the old ones is not trusted.
    other, _ = make_key_pair(tmp_path / "keys", "other-1")
    with pytest.raises(TrustError):
        fetch_for(ref("trust/warm"), node(tmp_path, signed_cache, trusted_public_keys=[other]))


# --- attack 1: forged record ---------------------------------------------------------------


@pytest.mark.parametrize(
    "env, attacker_signs, pinned",
    [
        # a forged record with a hook and LD_PRELOAD, unsigned, behind the unpinned ref
        ("trust/forged", False, False),
        # the same forgery signed by a key the node does not trust, behind the pinned ref
        ("trust/otherkey", True, True),
    ],
    ids=["forged-record-with-hook-and-ld-preload", "signed-by-an-untrusted-key"],
)
def test_forged_record_is_refused(tmp_path, signed_cache, publish_env, env, attacker_signs, pinned):
    owner, name, gen = split(publish_env(env, PLAIN))
    keys = {}
    if attacker_signs:
        keys["secret_key"] = make_key_pair(tmp_path / "attacker-keys", "attacker-1")[1]
    forged = attacker.forge_record(
        signed_cache.root, tmp_path / "attack", owner, name, gen, attacker.inject_hook, **keys
    )
    cfg = node(tmp_path, signed_cache)
    with pytest.raises(TrustError, match="not signed by a key this node trusts"):
        realize_for(ref(f"{owner}/{name}:{gen}" if pinned else f"{owner}/{name}"), cfg)
    assert_nothing_usable(cfg, forged)


def test_record_of_another_ref_is_refused(tmp_path, signed_cache, publish_env):
    """A genuine, signed record for alice/web served as bob/web."""
    a_owner, a_name, a_gen = split(publish_env("alice/web", PLAIN))
    b_owner, b_name, b_gen = split(
        publish_env("bob/web", PLAIN + 'greeting.pkg-path = "greeting"\n')
    )
    alice_record, _ = attacker.record_of(signed_cache.root, a_owner, a_name, a_gen)
    attacker.point(signed_cache.root, b_owner, b_name, b_gen, alice_record)
    cfg = node(tmp_path, signed_cache)
    with pytest.raises(TrustError, match=f"signed for alice/web:{a_gen}, not bob/web:{b_gen}"):
        realize_for(ref("bob/web"), cfg)
    assert_nothing_usable(cfg)
    # Remembered as verified (alice's) or not, the answer is the same.
    realize_for(ref("alice/web"), cfg)
    with pytest.raises(TrustError, match="signed for alice/web"):
        fetch_for(ref("bob/web"), cfg)


# --- rollback -------------------------------------------------------------------------------


def test_older_latest_after_a_newer_one_was_used_is_refused(tmp_path, signed_cache, publish_env):
    publish_env("trust/roll", PLAIN)
    owner, name, newest = split(publish_env("trust/roll", PLAIN + '[vars]\nV = "2"\n'))
    cfg = node(tmp_path, signed_cache)
    assert fetch_for(ref("trust/roll"), cfg).generation == newest
    attacker.set_latest(signed_cache.root, owner, name, newest - 1)  # freeze/rollback
    with pytest.raises(TrustError, match=f"older than generation {newest}.*rollback refused"):
        fetch_for(ref("trust/roll"), cfg)
    # Pinned, the older generation is the deployer's choice and still runs.
    env = realize_for(ref(f"trust/roll:{newest - 1}"), cfg)
    assert env.activation["vars"] == {}
    # Another node (state dir) that never saw the newer one accepts the hub's latest.
    fresh = node(tmp_path / "other-node", signed_cache)
    assert fetch_for(ref("trust/roll"), fresh).generation == newest - 1


# --- attack 2: unsigned content-addressed path ----------------------------------------------


def _unsigned_ca_package(tmp_path, cache) -> str:
    pkg = tmp_path / "ca-pkg"
    (pkg / "bin").mkdir(parents=True)
    (pkg / "bin" / "hello").write_text("#!/run/floxk/env/bin/sh\necho pwned\n")
    (pkg / "bin" / "hello").chmod(0o755)
    return attacker.add_unsigned(cache, pkg, flat=False)


@pytest.mark.parametrize("kind", ["ca_path", "drv"])
def test_forged_record_naming_an_unsigned_ca_path_or_drv_is_refused(
    tmp_path, signed_cache, publish_env, kind
):
    """Attacks 2 and 3 as reported: the forged record chose the path; nothing of it
    becomes valid on the node (the CA path is not kept, the .drv's output never built)."""
    if kind == "drv":
        target, never_valid = _unsigned_drv(tmp_path, signed_cache.root)
    else:
        target = never_valid = _unsigned_ca_package(tmp_path, signed_cache.root)
    owner, name, gen = split(publish_env(f"trust/{kind.replace('_', '-')}", PLAIN))
    forged = attacker.forge_record(
        signed_cache.root, tmp_path / "attack", owner, name, gen,
        attacker.point_output_at("hello", target),
    )  # fmt: skip
    cfg = node(tmp_path, signed_cache)
    with pytest.raises(TrustError, match="not signed by a key this node trusts"):
        realize_for(ref(f"{owner}/{name}"), cfg)
    assert_nothing_usable(cfg, forged)
    assert nix.invalid_paths([never_valid], store_root=Path(cfg.store_root)) == [never_valid]


def test_every_closure_path_needs_a_signature_even_content_addressed(tmp_path, signed_cache):
    """Behind the record: a lock (as if signed) naming a CA path nobody signed. Nix itself
    substitutes it despite require-sigs; the node's own check refuses it afterwards and
    removes it from the store again."""
    ca = _unsigned_ca_package(tmp_path, signed_cache.root)
    lock = lock_from_dict(
        {
            "lockfile-version": 1,
            "manifest": {"version": 1},
            "packages": [{"install_id": "ca", "system": current_system(), "store_path": ca}],
        }
    )
    cfg = node(tmp_path, signed_cache)
    with pytest.raises(TrustError, match="no signature by a key this node trusts") as e:
        realize(
            lock, system=current_system(), substituters=cfg.substituters,
            trusted_keys=cfg.trusted_public_keys, store_root=Path(cfg.store_root),
            state_dir=Path(cfg.state_dir),
        )  # fmt: skip
    assert e.value.paths == [ca]
    assert_nothing_usable(cfg, ca)
    log = (Path(cfg.state_dir) / "realize.log").read_text()
    assert f"refused {lock.digest()} {ca}" in log


# --- attack 3: unsigned .drv ------------------------------------------------------------------


def _unsigned_drv(tmp_path, cache) -> tuple[str, str]:
    return attacker.unsigned_drv(tmp_path, cache)


def test_lock_naming_a_drv_or_a_non_store_path_is_refused_when_parsed(tmp_path):
    base = {"lockfile-version": 1, "manifest": {"version": 1}}
    for path, error in [
        ("/nix/store/" + "a" * 32 + "-evil.drv", "names a derivation"),
        ("/etc", "not a Nix store path"),
        ("/nix/store/" + "a" * 32 + "-x/../../../etc", "not a Nix store path"),
    ]:
        package = {"install_id": "x", "system": "x86_64-linux", "outputs": {"out": path}}
        with pytest.raises(LockError, match=error):
            lock_from_dict({**base, "packages": [package]})  # the node's parse
        (tmp_path / "manifest.lock").write_text(json.dumps({**base, "packages": [package]}))
        with pytest.raises(LockError, match=error):
            load_lock(tmp_path / "manifest.lock")  # the laptop's


def test_the_node_never_builds_even_a_drv_it_is_handed(tmp_path, signed_cache):
    """Behind the lock parser: substitution itself refuses derivations (and Nix could not
    build one: see the next test)."""
    drv, output = _unsigned_drv(tmp_path, signed_cache.root)
    store = tmp_path / "store"
    with pytest.raises(RealizeError, match="nodes never build"):
        _substitute(
            [drv], substituters=[signed_cache.url], trusted_keys=[signed_cache.public_key],
            check_signatures=True, store_root=store, state_dir=tmp_path / "state", digest="x",
        )  # fmt: skip
    assert nix.invalid_paths([output], store_root=store) == [output]


def test_the_parallel_substitution_cannot_build_either(tmp_path, signed_cache):
    """substitute() raises max-jobs (Nix 2.8 fetches one path at a time under max-jobs 0):
    a derivation, or a derivation's output in Nix's `drv!out` syntax, never reaches Nix;
    and handed to Nix with the same options anyway, Nix cannot build it on this machine."""
    drv, output = _unsigned_drv(tmp_path, signed_cache.root)
    store = tmp_path / "store"
    for handed in (drv, f"{drv}!out", f"{output}/../{drv.rsplit('/', 1)[1]}"):
        with pytest.raises(NixError, match="nodes never build"):
            nix.substitute(
                [handed], substituters=[signed_cache.url],
                trusted_keys=[signed_cache.public_key], store_root=store, what="substituting",
            )  # fmt: skip
    proc = subprocess.run(
        ["nix-store", *nix.base_options(),
         *nix.node_options(substitution_jobs=nix.SUBSTITUTION_JOBS), "--store", str(store),
         *nix.substitution_options([signed_cache.url], [signed_cache.public_key]),
         "--realise", drv],
        env=nix.node_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "is required to build" in proc.stderr, proc.stderr
    assert nix.invalid_paths([output], store_root=store) == [output]


def test_path_infos_read_from_the_store_database_are_what_nix_says(
    tmp_path, publish_env, signed_cache, monkeypatch
):
    """verified_closure() checks the infos path_infos() reads from the store's database
    (one Nix process fewer): the same paths, hashes, sizes, references and signatures
    `nix path-info` gives."""
    import base64

    ref = publish_env("db-infos", 'version = 1\n[install]\nhello.pkg-path = "hello"\n')
    store = tmp_path / "store"
    env = realize(
        hub.peek(ref, [signed_cache.url]).lock, system=current_system(),
        substituters=[signed_cache.url], trusted_keys=[signed_cache.public_key],
        store_root=store, state_dir=tmp_path / "state",
    )  # fmt: skip
    paths = env.activation["packages"]
    from_db = storedb.path_infos(sorted(paths), store)
    monkeypatch.setattr(storedb, "path_infos", lambda *a: None)
    from_nix = nix.path_infos(paths, store_root=store)
    assert from_db is not None
    assert sorted(from_db) == sorted(from_nix) == env.activation["closure"]
    for path, info in from_nix.items():
        mine = from_db[path]
        algo, _, b64 = info["narHash"].partition("-")
        assert mine["narHash"] == f"{algo}:{base64.b64decode(b64).hex()}"
        assert mine["narSize"] == info["narSize"]
        assert mine["references"] == sorted(info["references"])
        assert sorted(mine["signatures"]) == sorted(info.get("signatures") or [])
        assert mine["signatures"], "every path of a pushed environment is signed"


def test_host_nix_conf_cannot_widen_trust(tmp_path, signed_cache, monkeypatch):
    """NIX_CONFIG (like nix.conf) naming the attacker's key and `require-sigs = false` is
    not read by the node's Nix calls."""
    ca = _unsigned_ca_package(tmp_path, signed_cache.root)
    attacker_public, attacker_key = make_key_pair(tmp_path / "attacker-keys", "attacker-1")
    attacker.sign_with(signed_cache.root, ca, attacker_key)
    monkeypatch.setenv(
        "NIX_CONFIG",
        f"extra-trusted-public-keys = {attacker_public}\nrequire-sigs = false\nmax-jobs = 4\n",
    )
    store = tmp_path / "store"
    subprocess.run(
        ["nix-store", *nix.base_options(), "--store", str(store),
         "--option", "substituters", signed_cache.url, "--option", "require-sigs", "false",
         "--realise", ca],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(TrustError):
        signatures.verified_closure([ca], [signed_cache.public_key], store_root=store)
    assert signatures.verified_closure([ca], [attacker_public], store_root=store) == [ca]


# --- attack 4: a symlink out of the store -----------------------------------------------------


def _signed_package(tmp_path, signed_cache, name: str, build) -> str:
    pkg = tmp_path / name
    pkg.mkdir()
    build(pkg)
    path = attacker.add_unsigned(signed_cache.root, pkg, flat=False)
    attacker.sign_with(signed_cache.root, path, signed_cache.secret_key_file)  # the publisher
    return path


def _store_path_lock(*paths: str):
    return lock_from_dict(
        {
            "lockfile-version": 1,
            "manifest": {"version": 1},
            "packages": [
                {"install_id": f"p{i}", "system": current_system(), "store_path": p}
                for i, p in enumerate(paths)
            ],
        }
    )


def test_symlink_out_of_the_store_is_kept_as_a_link_never_followed(tmp_path, signed_cache):
    def share_to_etc(pkg):
        (pkg / "share").symlink_to("/etc")
        (pkg / "lib").symlink_to("../../../etc")  # relative, same place
        (pkg / "bin").mkdir()
        (pkg / "bin" / "x").write_text("x")

    path = _signed_package(tmp_path, signed_cache, "evil-share", share_to_etc)
    cfg = node(tmp_path, signed_cache)
    env = realize(
        _store_path_lock(path), system=current_system(), substituters=cfg.substituters,
        trusted_keys=cfg.trusted_public_keys, store_root=Path(cfg.store_root),
        state_dir=Path(cfg.state_dir),
    )  # fmt: skip
    tree = Path(env.path)
    # The tree is one link to the package (only it has these dirs): inside a container
    # share/ is the container's own /etc; the host's /etc was never listed.
    assert tree_link(tree, "share") == f"{path}/share"
    assert tree_link(tree, "lib") == f"{path}/lib"


def test_a_package_entry_named_like_the_package_links_is_ignored(tmp_path, signed_cache):
    """`.pkgs` at a package's top is reserved like activation.json: it cannot replace the
    tree's package links (and so redirect another package's files)."""

    def squatter(pkg):
        (pkg / ".pkgs").mkdir()
        (pkg / ".pkgs" / "0").write_text("not a package")
        (pkg / "bin").mkdir()
        (pkg / "bin" / "x").write_text("x")

    path = _signed_package(tmp_path, signed_cache, "squatter", squatter)
    subprocess.run(
        ["nix-store", *nix.base_options(), "--store", str(tmp_path / "store"),
         "--option", "substituters", signed_cache.url, "--realise", path],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "t").mkdir()
    build_tree(tmp_path / "t", [(5, 0, "squatter", path)], store_root=tmp_path / "store")
    assert sorted(p.name for p in (tmp_path / "t" / ".pkgs").iterdir()) == ["0"]
    assert (tmp_path / "t" / ".pkgs" / "0").readlink() == Path(path)
    assert tree_link(tmp_path / "t", "bin") == f"{path}/bin"


def test_links_out_of_the_store_are_not_merged_or_compared_with_host_files(tmp_path, signed_cache):
    host_passwd = Path("/etc/passwd").read_bytes()

    def link(pkg):
        (pkg / "etc").mkdir()
        (pkg / "etc" / "passwd").symlink_to("/etc/passwd")
        (pkg / "share").symlink_to("/etc")

    def copy(pkg):
        (pkg / "etc").mkdir()
        (pkg / "etc" / "passwd").write_bytes(host_passwd)  # equal to the host's file
        (pkg / "share").mkdir()
        (pkg / "share" / "doc").write_text("doc")

    a = _signed_package(tmp_path, signed_cache, "links", link)
    b = _signed_package(tmp_path, signed_cache, "copies", copy)
    entries = [(5, 0, "links", a), (5, 1, "copies", b)]
    subprocess.run(
        ["nix-store", *nix.base_options(), "--store", str(tmp_path / "store"),
         "--option", "substituters", signed_cache.url, "--realise", a, b],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "t").mkdir()
    # Not "equal files": the link's target (the host's /etc/passwd) is never read.
    with pytest.raises(RealizeError, match="both provide etc/passwd"):
        build_tree(tmp_path / "t", entries, store_root=tmp_path / "store")
    # share: a link out of the store against a real directory is a clash too, not a merge
    # that would list the host's /etc.
    (tmp_path / "u").mkdir()
    entries = [(5, 0, "links", a), (6, 1, "copies", b)]
    build_tree(tmp_path / "u", entries, store_root=tmp_path / "store")
    assert tree_link(tmp_path / "u", "share") == f"{a}/share"
    assert tree_link(tmp_path / "u", "etc/passwd") == f"{a}/etc/passwd"


# --- attack 6: one owner gate for every entry point ---------------------------------------------


def test_owner_policy_applies_to_floxk_node_and_floxk_env_realize(
    tmp_path, signed_cache, publish_env, monkeypatch, capsys
):
    from shim.nodecli import main as floxk_node

    publish_env("evil/x", PLAIN)
    publish_env("good/x", PLAIN)
    toml = hub_node_toml(
        tmp_path, signed_cache.hub_url, signed_cache.public_key, policy={"allowed_owners": ["good"]}
    )
    monkeypatch.setenv("FLOXK_NODE_CONFIG", str(toml))
    with pytest.raises(SystemExit) as e:
        floxk_node(["realize", "evil/x"])
    assert e.value.code != 0
    assert "owner 'evil' is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        floxk_main(["env", "realize", "evil/x"])
    assert e.value.code != 0
    assert "owner 'evil' is not allowed" in capsys.readouterr().err
    # --hub and --trusted-key on the command line do not lift the node's policy.
    with pytest.raises(SystemExit) as e:
        floxk_main(["env", "realize", "evil/x", "--hub", signed_cache.hub_url])
    assert e.value.code != 0
    assert not (tmp_path / "state" / "envs").exists()
    floxk_node(["realize", "good/x"])
    tree = capsys.readouterr().out.strip()
    assert Path(tree, "bin", "hello").is_symlink()


def test_unsigned_records_only_with_the_insecure_switch_and_no_keys(tmp_path, catalog_flake):
    from floxk._lock import lock_environment
    from floxk._push import push_environment

    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / "manifest.toml").write_text(PLAIN)
    lock_environment(env_dir, catalog=f"path:{catalog_flake}")
    cache = tmp_path / "cache"
    push_environment(env_dir, to=cache.as_uri(), name="open/x")  # no signing key
    cfg = NodeConfig(
        hubs=[cache.as_uri()], substituters=[cache.as_uri()], state_dir=str(tmp_path / "s"),
        store_root=str(tmp_path / "store"), policy=Policy(),
    )  # fmt: skip
    with pytest.raises(TrustError, match="no trusted public keys"):
        realize_for(ref("open/x"), cfg)
    env = realize_for(ref("open/x"), cfg, insecure_accept_unsigned=True)
    assert Path(env.path, "bin", "hello").is_symlink()
    assert not (tmp_path / "s" / hub.RECORDS_DIR).exists()  # unsigned: never remembered
