"""The hub: where `OWNER/NAME[:GEN]` resolves to a locked environment.

A hub is a static tree next to a Nix binary cache (docs/hub.md), readable over file://
and http(s)://:

    <hub>/floxk/envs/OWNER/NAME/latest        the newest generation number, as text
    <hub>/floxk/envs/OWNER/NAME/<GEN>.json    one record per generation, never rewritten

A record holds the whole lock. It is not signed itself: what a node runs is decided by the
store paths in it, and those are only accepted with a signature from a key the node trusts.

Standard library only (runs on nodes).
"""

from __future__ import annotations

from shim import fastjson
from shim.digest import lock_digest
from shim.errors import FloxkError, LockError, NotFoundError
from shim.names import MAX_GEN_DIGITS, is_number, split_env_ref
from shim.records import record

TYPE_CHECKING = False  # typing and the lock model cost milliseconds per container create
if TYPE_CHECKING:
    from shim.model import Lock

RECORD_FORMAT = 1
HUB_DIR = "floxk/envs"

# Owner and name become URL path segments and file names: no dots first, no slashes. The
# grammar, checked with str methods (no `re` on the create path: shim.names), is the regex
#   ^(SEG)/(SEG)(?::([1-9][0-9]{0,8}))?$   SEG = [A-Za-z0-9][A-Za-z0-9._-]{0,99}
_FETCH_TIMEOUT = 30


@record(frozen=True)
class HubRecord:
    owner: str
    name: str
    generation: int
    lock: Lock
    url: str  # the record's own URL (<hub>/floxk/envs/OWNER/NAME/<GEN>.json)


@record(frozen=True)
class RawRecord:
    """A record as fetched and checked, its lock not parsed yet.

    `digest` has been checked against the lock's content, so it names the environment
    tree a node may already have: the warm path of a container create needs no more.
    """

    owner: str
    name: str
    generation: int
    digest: str
    lock_data: dict
    url: str

    def parsed(self) -> HubRecord:
        """The record with its lock parsed (LockError when the lock is not valid)."""
        from shim.model import lock_from_dict

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
    """The JSON a generation file holds (written by `floxk env push`)."""
    return {
        "floxk-hub-record": RECORD_FORMAT,
        "owner": owner,
        "name": name,
        "generation": generation,
        "digest": lock.digest(),
        "systems": lock.systems(),
        "created": created,
        "lock": lock.raw,
    }


def resolve(ref: str, hubs: list[str]) -> HubRecord:
    """Find `ref` on the first hub that has it; NotFoundError naming every hub tried."""
    return fetch(ref, hubs).parsed()


def fetch(ref: str, hubs: list[str]) -> RawRecord:
    """resolve() without parsing the lock: one read of `latest` (unless `ref` names the
    generation) and one of the record. Same errors, except an invalid lock whose digest
    matches, which parsed() reports."""
    owner, name, generation = parse_ref(ref)
    if not hubs:
        raise NotFoundError(
            f"cannot resolve {ref}: no hub is configured",
            hint="set `hubs` in the node configuration (or pass --hub)",
        )
    tried = []
    for hub in hubs:
        gen = generation
        if gen is None:
            latest = _fetch(_join(hub, latest_path(owner, name)))
            if latest is None:
                tried.append(f"{hub}: no environment {owner}/{name}")
                continue
            # [1-9][0-9]{0,8}, as in refs: int() would also take "1_0", "-1", "+1", "\u0661"
            if not is_number(latest.strip(), MAX_GEN_DIGITS):
                raise FloxkError(
                    f"hub {hub}: {latest_path(owner, name)} is not a generation number:"
                    f" {latest[:20]!r}"
                )
            gen = int(latest.strip())
        url = _join(hub, record_path(owner, name, gen))
        text = _fetch(url)
        if text is None:
            known = _fetch(_join(hub, latest_path(owner, name)))
            if known is None:
                tried.append(f"{hub}: no environment {owner}/{name}")
            else:
                tried.append(
                    f"{hub}: {owner}/{name} has no generation {gen} (latest is {known.strip()})"
                )
            continue
        return _checked_record(text, url, owner, name, gen)
    raise NotFoundError(
        f"{ref} not found: " + "; ".join(tried),
        hint="check the name and generation, or publish it with `floxk env push`",
    )


def _checked_record(text: str, url: str, owner: str, name: str, generation: int) -> RawRecord:
    try:
        record = fastjson.loads(text)
    except ValueError as e:  # json.JSONDecodeError, or an int past Python's digit limit
        raise LockError(f"{url}: invalid JSON: {getattr(e, 'msg', e)}") from None
    except RecursionError:
        raise LockError(f"{url}: invalid JSON: nested too deeply") from None
    if not isinstance(record, dict) or record.get("floxk-hub-record") != RECORD_FORMAT:
        raise LockError(f"{url}: not a floxk hub record (format {RECORD_FORMAT})")
    if (record.get("owner"), record.get("name"), record.get("generation")) != (
        owner,
        name,
        generation,
    ):
        raise LockError(f"{url}: the record names another environment or generation")
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
    return RawRecord(owner, name, generation, digest, lock, url)


def _join(hub: str, relative: str) -> str:
    return hub.rstrip("/") + "/" + relative


def _fetch(url: str) -> str | None:
    """The document at url, or None when it does not exist. Other failures raise."""
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
    return _http_get(url)


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


def _http_get(url: str) -> str | None:
    # Imported here: urllib.request pulls in http.client, email and ssl (tens of ms), and
    # a file:// hub, the common case on every container create, needs none of them.
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
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
