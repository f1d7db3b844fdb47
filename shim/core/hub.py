"""The hub: where `OWNER/NAME[:GEN]` resolves to a locked environment, signed.

A hub is a static tree next to a Nix binary cache (docs/hub.md), readable over file://
and http(s)://:

    <hub>/floxk/envs/OWNER/NAME/latest        the newest generation number, as text
    <hub>/floxk/envs/OWNER/NAME/<GEN>.json    a pointer: {"floxk-hub-record": 2, owner,
                                              name, generation, "record": STORE PATH}
    <cache>/<hash>.narinfo, nar/...           the record itself: a store path (a JSON file
                                              added with `nix store add-file`) whose
                                              narinfo carries the pusher's signature

Nothing the hub serves is trusted: the pointer only says which store path to fetch. The
record is substituted from the node's caches and checked by Nix against exactly the node's
trusted keys (shim.core.signatures.verified_closure) before anything in it is read; it names
its owner, name and generation, which must be the ones asked for; and for an unpinned ref
it may not be older than a generation this node already used from that hub (rollback).

What a node keeps (state_dir, root's):
    records/<KEYS>/<record store path name>   a verified record (KEYS: a digest of the
                                              trusted keys it was verified with). Later
                                              creates trust it by its store path, whose
                                              name is its content's hash: no Nix call.
    seen/<HUB>/OWNER/NAME                     the highest generation used from that hub

Fetching those bytes (file://, http(s)://, Nix substitution) is shim.core.hubfetch.
Standard library only (runs on nodes). The warm path (record verified before) reads four
small files and imports neither Nix nor the lock model.
"""

from __future__ import annotations

import os

from shim.core import fastjson
from shim.core.digest import lock_digest, sha256
from shim.core.errors import AccessError, FloxkError, LockError, NotFoundError, TrustError
from shim.core.hubfetch import HUB_DIR, _cat_record, _fetch, _join, _Refused, _substituted_record
from shim.core.names import MAX_GEN_DIGITS, is_number, split_env_ref
from shim.core.records import record

TYPE_CHECKING = False  # typing and the lock model cost milliseconds per container create
if TYPE_CHECKING:
    from typing import NoReturn, TypeGuard

    from shim.core.auth import Access
    from shim.core.lockfile import Lock

POINTER_FORMAT = 2  # "floxk-hub-record" of <GEN>.json (1: an unsigned record with the lock)
RECORD_FORMAT = 1  # "floxk-env-record" of the signed record
RECORDS_DIR = "records"
SEEN_DIR = "seen"

# Owner and name become URL path segments and file names: no dots first, no slashes. The
# grammar, checked with str methods (no `re` on the create path: shim.core.names), is the regex
#   ^(SEG)/(SEG)(?::([1-9][0-9]{0,8}))?$   SEG = [A-Za-z0-9][A-Za-z0-9._-]{0,99}


@record(frozen=True)
class Trust:
    """What a node trusts: where store paths come from, whose signatures count, where
    verified records and generations are remembered. From node.toml (shim.core.service.trust_of)."""

    substituters: list[str]
    trusted_keys: list[str]
    state_dir: str
    store_root: str | None = None
    # Unsigned records and paths: only with no keys at all AND this switch (never on pods).
    insecure_accept_unsigned: bool = False
    # The tokens requests carry (shim.core.auth.Access; None: every hub and cache is public).
    access: Access | None = None

    @property
    def check_signatures(self) -> bool:
        return bool(self.trusted_keys) or not self.insecure_accept_unsigned


@record(frozen=True)
class HubRecord:
    owner: str
    name: str
    generation: int
    lock: Lock
    url: str  # the pointer's URL (<hub>/floxk/envs/OWNER/NAME/<GEN>.json)


@record(frozen=True)
class RawRecord:
    """A record as fetched and verified, its lock not parsed yet.

    Its signature, ref and generation have been checked and `digest` matches the lock, so
    it names the environment tree a node may already have: the warm path needs no more.
    """

    owner: str
    name: str
    generation: int
    digest: str
    lock_data: dict
    url: str

    def parsed(self) -> HubRecord:
        """The record with its lock parsed (LockError when the lock is not valid)."""
        from shim.core.lockfile import lock_from_dict

        lock = lock_from_dict(self.lock_data, source=self.url)
        return HubRecord(self.owner, self.name, self.generation, lock, self.url)


def parse_ref(ref: str) -> tuple[str, str, int | None]:
    """Split `OWNER/NAME[:GEN]` into its parts; a malformed ref is a FloxkError."""
    parts = split_env_ref(ref)
    if parts is None:
        raise FloxkError(
            f"{ref!r} is not an environment reference",
            hint="use OWNER/NAME or OWNER/NAME:GENERATION (letters, digits, . _ -)",
        )
    return parts


def env_dir(owner: str, name: str) -> str:
    """The hub-relative directory of an environment's records."""
    return f"{HUB_DIR}/{owner}/{name}"


def record_path(owner: str, name: str, generation: int) -> str:
    return f"{env_dir(owner, name)}/{generation}.json"


def latest_path(owner: str, name: str) -> str:
    return f"{env_dir(owner, name)}/latest"


def make_record(owner: str, name: str, generation: int, lock: Lock, *, created: str) -> dict:
    """The signed record of one generation (`floxk env push` adds it to the cache)."""
    return {
        "floxk-env-record": RECORD_FORMAT,
        "owner": owner,
        "name": name,
        "generation": generation,
        "digest": lock.digest(),
        "systems": lock.systems(),
        "created": created,
        "lock": lock.raw,
    }


def make_pointer(owner: str, name: str, generation: int, store_path: str) -> dict:
    """What <GEN>.json holds: which store path is the generation's record."""
    return {
        "floxk-hub-record": POINTER_FORMAT,
        "owner": owner,
        "name": name,
        "generation": generation,
        "record": store_path,
    }


def record_store_name(owner: str, name: str, generation: int) -> str:
    """The record's store path name (Nix allows 211 characters; long refs are cut)."""
    return f"floxk-{owner}-{name}-{generation}"[:200] + ".json"


def resolve(ref: str, hubs: list[str], trust: Trust) -> HubRecord:
    """Find `ref` on the first hub that has it; NotFoundError naming every hub tried."""
    return fetch(ref, hubs, trust).parsed()


def peek(ref: str, hubs: list[str]) -> HubRecord:
    """resolve() for display on a laptop (`floxk env show`, tests, benchmarks): the record
    read from the hub's own cache with `nix store cat`, its signature NOT checked. Never
    for realizing on a node: that is shim.core.service.fetch_for, with the node's keys."""
    return fetch(ref, hubs, None).parsed()


def fetch(ref: str, hubs: list[str], trust: Trust | None) -> RawRecord:
    """resolve() without parsing the lock: `latest` (unless `ref` names the generation),
    the pointer, and the verified record (remembered: shim.core.nix only the first time).
    Same errors, except an invalid lock whose digest matches, which parsed() reports;
    TrustError for a record that is unsigned, signed by another key, for another ref or
    generation, or older than one already used."""
    owner, name, generation = parse_ref(ref)
    if not hubs:
        raise NotFoundError(
            f"cannot resolve {ref}: no hub is configured",
            hint="set `hubs` in the node configuration (or pass --hub)",
        )
    tried: list[str] = []
    access = trust.access if trust is not None else None
    for hub in hubs:
        try:
            found = _fetch_from(hub, owner, name, generation, trust, access, tried)
        except _Refused as e:
            raise (
                access.refused(hub, f"{owner}/{name}", e.code)
                if access
                else AccessError(f"{hub} refused the request for {owner}/{name} (HTTP {e.code})")
            ) from None
        if found is not None:
            return found
    raise NotFoundError(
        f"{ref} not found: " + "; ".join(tried),
        hint="check the name and generation, or publish it with `floxk env push`",
    )


def _fetch_from(
    hub: str,
    owner: str,
    name: str,
    generation: int | None,
    trust: Trust | None,
    access,
    tried: list[str],
) -> RawRecord | None:
    """fetch() on one hub; None (and a line in `tried`) when it does not have the ref."""
    if access is not None:
        access.check_askable(hub, f"{owner}/{name}")
    gen = generation
    if gen is None:
        latest = _fetch(_join(hub, latest_path(owner, name)), access)
        if latest is None:
            tried.append(f"{hub}: no environment {owner}/{name}")
            return None
        # [1-9][0-9]{0,8}, as in refs: int() would also take "1_0", "-1", "+1", "\u0661"
        if not is_number(latest.strip(), MAX_GEN_DIGITS):
            raise FloxkError(
                f"hub {hub}: {latest_path(owner, name)} is not a generation number: {latest[:20]!r}"
            )
        gen = int(latest.strip())
    url = _join(hub, record_path(owner, name, gen))
    text = _fetch(url, access)
    if text is None:
        known = _fetch(_join(hub, latest_path(owner, name)), access)
        if known is None:
            tried.append(f"{hub}: no environment {owner}/{name}")
        else:
            tried.append(
                f"{hub}: {owner}/{name} has no generation {gen} (latest is {known.strip()})"
            )
        return None
    store_path = _pointed_record(text, url, owner, name, gen)
    found = _verified_record(store_path, url, owner, name, gen, trust, hub)
    if trust is not None:
        _check_not_older(found, hub, trust, pinned=generation is not None)
    return found


def _pointed_record(text: str, url: str, owner: str, name: str, generation: int) -> str:
    """The store path a pointer names (the pointer is not trusted: only its form is checked)."""
    try:
        pointer = fastjson.loads(text)
    except ValueError as e:  # json.JSONDecodeError, or an int past Python's digit limit
        raise LockError(f"{url}: invalid JSON: {getattr(e, 'msg', e)}") from None
    except RecursionError:
        raise LockError(f"{url}: invalid JSON: nested too deeply") from None
    if not isinstance(pointer, dict) or pointer.get("floxk-hub-record") != POINTER_FORMAT:
        raise TrustError(
            f"{url}: not a signed floxk hub record (format {POINTER_FORMAT})",
            hint="republish it with this floxk's `floxk env push --signing-key KEY`",
        )
    if (pointer.get("owner"), pointer.get("name"), pointer.get("generation")) != (
        owner,
        name,
        generation,
    ):
        raise TrustError(f"{url}: the record names another environment or generation")
    store_path = pointer.get("record")
    if not _is_record_store_path(store_path):
        raise TrustError(f"{url}: 'record' is not a store path of a record: {store_path!r}")
    return store_path


def _is_record_store_path(value: object) -> TypeGuard[str]:
    """/nix/store/<32 base-32 chars>-<name>.json, nothing after it (model.STORE_PATH_RE's
    grammar with str methods: no `re` on the create path)."""
    if not isinstance(value, str) or not value.startswith("/nix/store/"):
        return False
    base = value[len("/nix/store/") :]
    digest, dash, rest = base.partition("-")
    return (
        len(digest) == 32
        and digest.isascii()
        and digest.isalnum()
        and digest == digest.lower()
        and not any(c in digest for c in "eotu")
        and dash == "-"
        and rest.endswith(".json")
        and rest.isascii()
        and rest.translate(_STORE_NAME_PUNCT).isalnum()
    )


_STORE_NAME_PUNCT = str.maketrans("", "", "+-._?=")


def _verified_record(
    store_path: str,
    url: str,
    owner: str,
    name: str,
    generation: int,
    trust: Trust | None,
    hub: str,
) -> RawRecord:
    """The record at `store_path`, checked: signed by a trusted key (unless `trust` is
    None: peek()), for this ref and generation, its digest matching its lock. Remembered
    once checked."""
    memo = _memo_path(trust, store_path) if trust is not None else None
    remembered = _read_json_file(memo) if memo is not None else None
    if remembered is not None:  # written only after every check below passed
        if (remembered["owner"], remembered["name"], remembered["generation"]) != (
            owner,
            name,
            generation,
        ):
            _wrong_ref(url, remembered, owner, name, generation)
        return RawRecord(owner, name, generation, remembered["digest"], remembered["lock"], url)
    data = _substituted_record(store_path, trust) if trust else _cat_record(store_path, hub)
    try:
        record = fastjson.loads(data)
    except ValueError as e:
        raise LockError(f"{url}: record {store_path}: invalid JSON: {e}") from None
    except RecursionError:
        raise LockError(f"{url}: record {store_path}: invalid JSON: nested too deeply") from None
    if not isinstance(record, dict) or record.get("floxk-env-record") != RECORD_FORMAT:
        raise LockError(f"{url}: {store_path} is not a floxk environment record")
    if (record.get("owner"), record.get("name"), record.get("generation")) != (
        owner,
        name,
        generation,
    ):
        _wrong_ref(url, record, owner, name, generation)
    lock = record.get("lock")
    if not isinstance(lock, dict):
        raise LockError(f"{url}: a lock must be a JSON object")
    digest = record.get("digest")
    try:
        computed = lock_digest(lock)
    except UnicodeEncodeError:  # JSON may escape a lone surrogate; no UTF-8 has one
        raise LockError(
            f"{url}: the lock holds a string that is not valid Unicode (a lone \\u surrogate)"
        ) from None
    if digest != computed:
        raise LockError(f"{url}: the record's digest does not match its lock (damaged record)")
    if memo is not None:
        from shim.core.atomic import write_atomic

        os.makedirs(os.path.dirname(memo), mode=0o700, exist_ok=True)
        write_atomic(memo, data, 0o600)
    return RawRecord(owner, name, generation, digest, lock, url)


def _wrong_ref(url: str, record: dict, owner: str, name: str, generation: int) -> NoReturn:
    signed_for = f"{record.get('owner')}/{record.get('name')}:{record.get('generation')}"
    raise TrustError(
        f"{url}: the record is signed for {signed_for}, not {owner}/{name}:{generation}",
        hint="the hub serves another environment's record here: check who can write the hub",
    )


def _memo_path(trust: Trust, store_path: str) -> str | None:
    """Where a record verified with exactly these keys is remembered (None: unsigned mode,
    whose records are never remembered as verified)."""
    if not trust.check_signatures:
        return None
    keys = sha256("\n".join(sorted(trust.trusted_keys)).encode()).hexdigest()[:32]
    return os.path.join(trust.state_dir, RECORDS_DIR, keys, os.path.basename(store_path))


def _check_not_older(found: RawRecord, hub: str, trust: Trust, *, pinned: bool) -> None:
    """Rollback protection: an unpinned ref never resolves to a generation older than one
    already used from this hub; every use raises the mark. A pinned generation is the
    deployer's explicit choice and always allowed."""
    mark = os.path.join(
        trust.state_dir,
        SEEN_DIR,
        sha256(hub.rstrip("/").encode()).hexdigest()[:32],
        found.owner,
        found.name,
    )
    seen = _read_generation(mark)
    if not pinned and seen is not None and found.generation < seen:
        raise TrustError(
            f"{found.url}: {found.owner}/{found.name} resolves to generation "
            f"{found.generation}, older than generation {seen} this node already used "
            f"from {hub} (rollback refused)",
            hint=f"if the rollback is wanted, pin it: {found.owner}/{found.name}:"
            f"{found.generation}; otherwise check who can write the hub",
        )
    if seen is None or found.generation > seen:
        from shim.core.atomic import write_atomic
        from shim.core.realize import file_lock

        os.makedirs(os.path.dirname(mark), mode=0o700, exist_ok=True)
        with file_lock(mark + ".lock"):
            seen = _read_generation(mark)
            if seen is None or found.generation > seen:
                write_atomic(mark, f"{found.generation}\n".encode(), 0o600)


def _read_generation(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(f.read().strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # written atomically: damage is not from floxk
        raise TrustError(
            f"cannot read the generation floxk last used, {path}: {e}",
            hint="write the generation last used into it (or delete it to accept any)",
        ) from None


def _read_json_file(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = fastjson.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
