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
trusted keys (shim.core.nix.verified_closure) before anything in it is read; it names its
owner, name and generation, which must be the ones asked for; and for an unpinned ref it
may not be older than a generation this node already used from that hub (rollback).

What a node keeps (state_dir, root's):
    records/<KEYS>/<record store path name>   a verified record (KEYS: a digest of the
                                              trusted keys it was verified with). Later
                                              creates trust it by its store path, whose
                                              name is its content's hash: no Nix call.
    seen/<HUB>/OWNER/NAME                     the highest generation used from that hub

Standard library only (runs on nodes). The warm path (record verified before) reads four
small files and imports neither Nix nor the lock model.
"""

from __future__ import annotations

import os

from shim.core import fastjson
from shim.core.digest import lock_digest, sha256
from shim.core.errors import AccessError, FloxkError, LockError, NotFoundError, TrustError
from shim.core.names import MAX_GEN_DIGITS, is_number, split_env_ref
from shim.core.records import record

TYPE_CHECKING = False  # typing and the lock model cost milliseconds per container create
if TYPE_CHECKING:
    from typing import NoReturn

    from shim.core.lockfile import Lock

POINTER_FORMAT = 2  # "floxk-hub-record" of <GEN>.json (1: an unsigned record with the lock)
RECORD_FORMAT = 1  # "floxk-env-record" of the signed record
HUB_DIR = "floxk/envs"
RECORDS_DIR = "records"
SEEN_DIR = "seen"
_MAX_RECORD_BYTES = 64 << 20

# Owner and name become URL path segments and file names: no dots first, no slashes. The
# grammar, checked with str methods (no `re` on the create path: shim.core.names), is the regex
#   ^(SEG)/(SEG)(?::([1-9][0-9]{0,8}))?$   SEG = [A-Za-z0-9][A-Za-z0-9._-]{0,99}
_FETCH_TIMEOUT = 30


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
    access: object = None

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
    tried = []
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


def _is_record_store_path(value: object) -> bool:
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


def _substituted_record(store_path: str, trust: Trust) -> bytes:
    """Fetch the record's store path from the node's caches and check its signature with
    Nix; its bytes. A refused record is deleted from the store again. Under gc's lock
    (shared), so `floxk env gc` cannot free the record between fetching and reading it."""
    from shim.core.realize import file_lock

    with file_lock(os.path.join(trust.state_dir, "locks", "gc.lock"), shared=True):
        return _substituted_record_locked(store_path, trust)


def _fetch_and_verify_record(store_path: str, trust: Trust) -> None:
    from shim.core import nix
    from shim.core.errors import NixError

    store_root = trust.store_root
    try:
        with nix.credentials(trust.access, trust.substituters) as auth_options:
            argv = [
                "nix-store", *nix.base_options(), *nix.node_options(),
                *nix.store_args(store_root),
                *nix.substitution_options(
                    trust.substituters, trust.trusted_keys,
                    check_signatures=trust.check_signatures,
                ),
                *auth_options, "--realise", store_path,
            ]  # fmt: skip
            _, progress = nix.run_nix_with_log(
                argv, what=f"fetching the record {store_path}", env=nix.node_env()
            )
    except NixError as e:
        raise TrustError(
            e.message,
            hint="push the environment again (`floxk env push`) to a cache listed in the "
            "node's substituters",
        ) from None
    if trust.check_signatures:
        try:
            nix.verified_closure(
                [store_path], trust.trusted_keys, store_root=store_root,
                substituters=trust.substituters, access=trust.access,
            )  # fmt: skip
        except TrustError as e:
            if any(path == store_path for path, _ in nix.copied_from(progress)):
                nix.delete_paths([store_path], store_root=store_root)
            raise TrustError(
                f"the record {store_path} is not signed by a key this node trusts",
                hint="push with `floxk env push --signing-key KEY` and list its public key in "
                "the node's trusted_public_keys",
                paths=e.paths,
            ) from None


def _substituted_record_locked(store_path: str, trust: Trust) -> bytes:
    from shim.core.errors import NixError

    store_root = trust.store_root
    if trust.check_signatures and not trust.trusted_keys:
        raise TrustError(
            "no trusted public keys are configured, so no record can be accepted",
            hint="set trusted_public_keys in the node configuration (or pass --trusted-key)",
        )
    if store_root is not None:
        os.makedirs(store_root, exist_ok=True)
    # Twice at most: a concurrent create of the same pod (the sandbox's prefetch) may refuse
    # the same record and delete it between our fetch and our check; then fetch it again.
    for attempt in (1, 2):
        try:
            _fetch_and_verify_record(store_path, trust)
            break
        except NixError:
            if attempt == 2:
                raise
    real = os.path.join(store_root or "/", store_path.lstrip("/"))
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise LockError(f"cannot read the record {store_path}: {e.strerror}") from None
    try:
        import stat

        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_RECORD_BYTES:
            raise LockError(f"the record {store_path} is not a JSON file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _cat_record(store_path: str, hub: str) -> bytes:
    """The record's bytes straight from the hub's cache, unchecked (peek() only)."""
    from shim.core import nix

    out = nix.run_nix(
        ["nix", *nix.base_options(), *nix.option("extra-experimental-features", "nix-command"),
         "store", "cat", "--store", hub, store_path],
        what=f"reading the record {store_path} from {hub}",
    )  # fmt: skip
    return out.encode("utf-8")


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


def _join(hub: str, relative: str) -> str:
    return hub.rstrip("/") + "/" + relative


class _Refused(Exception):
    """A hub answered 401 (or 403 to a request that carried a token's question)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _fetch(url: str, access=None) -> str | None:
    """The document at url, or None when it does not exist. Other failures raise.

    `access` (shim.core.auth.Access): the token the request carries, if `url` needs one; a hub
    that refuses it raises _Refused. A positive answer to a token is kept briefly."""
    scheme, path = _scheme_and_path(url)
    if scheme == "file":
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise FloxkError(f"cannot read {path}: {e}") from None
        except UnicodeDecodeError as e:
            raise FloxkError(f"hub file {path} is not UTF-8 text: {e.reason}") from None
    if scheme not in ("http", "https"):
        raise FloxkError(
            f"hub URL {url!r} is not file://, http:// or https://",
            hint="hubs are URLs like file:///srv/cache or https://cache.example.org",
        )
    if access is None or access.credential(url) is None:
        return _http_get(url, None)
    # Only the hub's own files are remembered (a narinfo is asked for once per realization).
    cacheable = f"/{HUB_DIR}/" in url
    text = access.cached(url) if cacheable else None
    if text is None:
        text = _http_get(url, access.header(url), needs_auth=True)
        if text is not None and cacheable:
            access.remember(url, text)
    return text


def _scheme_and_path(url: str) -> tuple[str, str]:
    """urlsplit(url).scheme and unquote(urlsplit(url).path), with urllib.parse (and the
    ipaddress module it imports) only for URLs where str methods could differ from it:
    blanks or control characters (stripped or dropped by urlsplit), brackets (IPv6
    netlocs), %-escapes, non-ASCII. A hub URL is a plain file:// on nearly every create."""
    if not url.isascii() or not url.isprintable() or " " in url or any(c in url for c in "[]%"):
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        return parts.scheme, urllib.parse.unquote(parts.path)
    scheme, colon, rest = url.partition(":")
    if not (colon and scheme[:1].isalpha() and scheme.lower() in ("file", "http", "https")):
        return "", url  # urlsplit would find another scheme or none: neither is served
    if rest.startswith("//"):  # a netloc runs to the first "/", "?" or "#"
        rest = rest[2:]
        rest = rest[min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest)) :]
    return scheme.lower(), rest.split("#", 1)[0].split("?", 1)[0]


def _http_get(url: str, authorization: str | None, *, needs_auth: bool = False) -> str | None:
    """GET url; None for 404/410 (and 403 of a public hub: S3 says so for a missing key).
    `authorization` goes to this URL only, never to a redirect's target; with `needs_auth`
    a 401 or 403 raises _Refused."""
    # Imported here: urllib.request pulls in http.client, email and ssl (tens of ms), and
    # a file:// hub, the common case on every container create, needs none of them.
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_unredirected_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=_FETCH_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        if e.code == 401 or (needs_auth and e.code == 403):
            raise _Refused(e.code) from None
        if e.code in (403, 404, 410):
            return None
        raise FloxkError(f"hub request {url} failed: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FloxkError(
            f"hub {url} is unreachable: {getattr(e, 'reason', e)}",
            hint="check the node's hub URLs and network",
        ) from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FloxkError(f"hub file {url} is not UTF-8 text: {e.reason}") from None
