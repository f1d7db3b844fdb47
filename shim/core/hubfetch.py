"""How the hub's bytes reach a node: its files over file:// and http(s)://, and its records
substituted with Nix from the node's caches (signature checked) or read unchecked for peek().

shim.core.hub decides what the bytes mean and whether to trust them; this module only
fetches them. Standard library only (runs on nodes). On the create path (a file:// hub):
urllib, Nix and the lock model are imported only by the functions that need them.
"""

from __future__ import annotations

import os

from shim.core.errors import FloxkError, LockError, TrustError

TYPE_CHECKING = False  # typing costs milliseconds per container create
if TYPE_CHECKING:
    from shim.core.hub import Trust

HUB_DIR = "floxk/envs"  # the hub's own files (shim.core.hub's layout) under a hub URL
_MAX_RECORD_BYTES = 64 << 20
_FETCH_TIMEOUT = 30


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
    from shim.core.signatures import verified_closure

    store_root = trust.store_root
    try:
        with nix.credentials(trust.access, trust.substituters) as auth_options:
            progress = nix.substitute(
                [store_path], substituters=trust.substituters, trusted_keys=trust.trusted_keys,
                check_signatures=trust.check_signatures, store_root=store_root,
                extra=auth_options, what=f"fetching the record {store_path}",
            )  # fmt: skip
    except NixError as e:
        raise TrustError(
            e.message,
            hint="push the environment again (`floxk env push`) to a cache listed in the "
            "node's substituters",
        ) from None
    if trust.check_signatures:
        try:
            verified_closure(
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
