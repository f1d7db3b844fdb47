"""What an attacker who can write a hub and its binary cache, but has no trusted signing
key, can do to it: real Nix, real files (a compromised bucket, a misconfigured web server,
a man in the middle of an http hub all amount to this). Used by the trust tests in
tests/env, tests/shim and tests/cri.

Every function edits a file:// cache the way such an attacker could: reading what is
public, adding store paths unsigned (or signed with a key of their own), rewriting the
hub's pointers and `latest`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from shim.core import hub
from shim.core.digest import lock_digest
from shim.core.nix import base_options

NIX = ["nix", *base_options(), "--option", "extra-experimental-features", "nix-command"]


def _nix(*args: str) -> str:
    return subprocess.run([*NIX, *args], check=True, capture_output=True, text=True).stdout.strip()


def pointer_file(cache: Path, owner: str, name: str, generation: int) -> Path:
    return Path(cache) / hub.record_path(owner, name, generation)


def record_of(cache: Path, owner: str, name: str, generation: int) -> tuple[str, dict]:
    """(store path, content) of a published record: both are public."""
    pointer = json.loads(pointer_file(cache, owner, name, generation).read_text())
    path = pointer["record"]
    return path, json.loads(_nix("store", "cat", "--store", Path(cache).as_uri(), path))


def add_unsigned(cache: Path, source: Path, *, flat: bool = True) -> str:
    """Add a file (flat) or a directory to the cache: a content-addressed path, unsigned."""
    verb = "add-file" if flat else "add-path"
    return _nix("store", verb, "--store", Path(cache).as_uri(), str(source)).splitlines()[-1]


def sign_with(cache: Path, path: str, secret_key: Path) -> None:
    """Sign a path in the cache with a key of the attacker's own."""
    _nix("store", "sign", "--store", Path(cache).as_uri(), "--key-file", str(secret_key), path)


def point(cache: Path, owner: str, name: str, generation: int, store_path: str) -> None:
    """Rewrite the hub's pointer owner/name/<generation>.json to `store_path`."""
    file = pointer_file(cache, owner, name, generation)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(hub.make_pointer(owner, name, generation, store_path)))


def set_latest(cache: Path, owner: str, name: str, generation: int) -> None:
    (Path(cache) / hub.latest_path(owner, name)).write_text(f"{generation}\n")


def forge_record(
    cache: Path,
    work: Path,
    owner: str,
    name: str,
    generation: int,
    change: Callable[[dict], None],
    *,
    secret_key: Path | None = None,
) -> str:
    """Edit a published record (`change` mutates its content), recompute its digest, add
    it to the cache (unsigned, or signed with the attacker's `secret_key`) and point the
    hub at it. Returns the forged record's store path."""
    _, record = record_of(cache, owner, name, generation)
    change(record)
    record["digest"] = lock_digest(record["lock"])
    work.mkdir(parents=True, exist_ok=True)
    file = work / hub.record_store_name(owner, name, generation)
    file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    path = add_unsigned(cache, file)
    if secret_key is not None:
        sign_with(cache, path, secret_key)
    point(cache, owner, name, generation, path)
    return path


def inject_hook(record: dict) -> None:
    """Attack 1: a hook that runs before the command, and LD_PRELOAD in the vars."""
    manifest = record["lock"]["manifest"]
    manifest.setdefault("hook", {})["on-activate"] = "echo INJECTED; id -u"
    manifest.setdefault("vars", {})["LD_PRELOAD"] = "/tmp/evil.so"


def point_output_at(install_id: str, store_path: str) -> Callable[[dict], None]:
    """Attacks 2 and 3: the lock's output of `install_id` names another store path."""

    def change(record: dict) -> None:
        for package in record["lock"]["packages"]:
            if package["install_id"] == install_id:
                package["outputs"] = {"out": store_path}
                package["outputs_to_install"] = ["out"]

    return change


# --- one hub with every attack, for the create-path and CRI suites ---------------------------

VALID = '[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n'
OWNERS = ["acme", "alice", "bob"]  # the node's policy.allowed_owners ("evil" is not)


def publish_attacked_hub(work: Path):
    """Publish environments with the real `floxk env push` (signed), then attack them.

    Returns a namespace: url, key (trusted public key line), cache, secret (the publisher's
    key file), and `refs`, one per case:
      valid       acme/valid: genuine (busybox + hello); must run
      forged      attack 1: record edited (hook + LD_PRELOAD), digest recomputed, unsigned
      otherkey    the same forgery signed with the attacker's own key
      ca_forged   attack 2: forged record whose hello output is an unsigned CA path
      ca_signed   attack 2 behind the record: the publisher signed a record naming an
                  unsigned CA path (the node's closure check must refuse it)
      drv         attack 3: forged record naming an unsigned .drv nobody built
      drv_signed  attack 3 behind the record: a signed record naming the .drv
      etc_link    attack 4: a signed package whose share/ is a symlink to /etc
      other_ref   bob/web served with alice/web's genuine record
      roll        acme/roll, generations 1 and 2 (tests move `latest` back themselves)
      evil        evil/x: genuine, but its owner is not in OWNERS
    `ca_path`, `drv_output`: what must never become valid on a node.
    """
    from types import SimpleNamespace

    from e2e.catalog import prepare
    from floxk._lock import lock_environment
    from floxk._push import push_environment
    from shim.core.model import current_system
    from testkit.nix import make_key_pair

    catalog = prepare(work / "catalog")
    public, secret = make_key_pair(work / "keys", "floxk-test-1")
    _, attacker_key = make_key_pair(work / "attacker-keys", "attacker-1")
    cache = work / "cache"

    def publish(full: str, manifest: str) -> tuple[str, str, int]:
        d = work / "envs" / full.replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        (d / "manifest.toml").write_text("version = 1\n" + manifest)
        lock_environment(d, catalog=catalog)
        pushed = push_environment(d, to=cache.as_uri(), name=full, signing_key=secret)
        owner, name = full.split("/")
        return owner, name, pushed.generation

    refs: dict[str, str] = {}
    attack = work / "attack"
    publish("acme/valid", VALID)
    refs["valid"] = "acme/valid"
    for case, change, key in [
        ("forged", inject_hook, None),
        ("otherkey", inject_hook, attacker_key),
    ]:
        owner, name, gen = publish(f"acme/{case}", VALID)
        forge_record(cache, attack / case, owner, name, gen, change, secret_key=key)
        refs[case] = f"{owner}/{name}"

    ca_dir = work / "ca-pkg"
    (ca_dir / "bin").mkdir(parents=True)
    (ca_dir / "bin" / "hello").write_text("#!/run/floxk/env/bin/sh\necho INJECTED\n")
    (ca_dir / "bin" / "hello").chmod(0o755)
    ca_path = add_unsigned(cache, ca_dir, flat=False)
    drv, drv_output = unsigned_drv(work, cache)
    for case, target, key in [
        ("ca_forged", ca_path, None),
        ("ca_signed", ca_path, secret),
        ("drv", drv, None),
        ("drv_signed", drv, secret),
    ]:
        owner, name, gen = publish(f"acme/{case.replace('_', '-')}", VALID)
        forge_record(
            cache, attack / case, owner, name, gen, point_output_at("hello", target),
            secret_key=key,
        )  # fmt: skip
        refs[case] = f"{owner}/{name}"

    etc = work / "etc-link"
    (etc / "bin").mkdir(parents=True)
    (etc / "share").symlink_to("/etc")
    (etc / "bin" / "etc-link").write_text("#!/run/floxk/env/bin/sh\nls /run/floxk/env/share/\n")
    (etc / "bin" / "etc-link").chmod(0o755)
    etc_path = add_unsigned(cache, etc, flat=False)
    sign_with(cache, etc_path, secret)  # a package the publisher signed: the link is its own
    owner, name, gen = publish("acme/etc-link", VALID)

    def add_etc_link(record: dict) -> None:
        record["lock"]["packages"].append(
            {"install_id": "etclink", "system": current_system(), "store_path": etc_path}
        )
        record["lock"]["packages"] = [
            p for p in record["lock"]["packages"] if p["install_id"] != "hello"
        ]

    forge_record(cache, attack / "etc", owner, name, gen, add_etc_link, secret_key=secret)
    refs["etc_link"] = f"{owner}/{name}"

    a_owner, a_name, a_gen = publish("alice/web", VALID)
    b_owner, b_name, b_gen = publish("bob/web", VALID + '[vars]\nWHO = "bob"\n')
    alice_record, _ = record_of(cache, a_owner, a_name, a_gen)
    point(cache, b_owner, b_name, b_gen, alice_record)
    refs["other_ref"] = "bob/web"
    refs["alice"] = "alice/web"

    publish("acme/roll", VALID + '[vars]\nGEN = "1"\n')
    publish("acme/roll", VALID + '[vars]\nGEN = "2"\n')
    refs["roll"] = "acme/roll"
    publish("evil/x", VALID)
    refs["evil"] = "evil/x"
    return SimpleNamespace(
        url=cache.as_uri(), key=public, cache=cache, secret=secret, refs=refs,
        ca_path=ca_path, drv_output=drv_output,
    )  # fmt: skip


def unsigned_drv(work: Path, cache: Path) -> tuple[str, str]:
    """A derivation nobody built (its output is in no cache), copied unsigned into the
    cache; (drv path, its output path). Its builder would write a file and reach nothing."""
    from shim.core.model import current_system

    store = str(work / "attacker-store")
    expr = (
        f'derivation {{ name = "evil"; system = "{current_system()}"; builder = "/bin/sh";'
        ' args = [ "-c" "echo built-on-the-node > $out" ]; }'
    )
    drv = subprocess.run(
        ["nix-instantiate", *base_options(), "--store", store, "--expr", expr],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    shown = json.loads(_nix("--store", store, "show-derivation", drv))
    output = shown[drv]["outputs"]["out"]["path"]
    _nix("copy", "--from", store, "--to", Path(cache).as_uri(), "--derivation", drv)
    return drv, output
