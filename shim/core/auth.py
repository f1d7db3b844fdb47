"""Private hubs: which token a request to a hub or cache carries (docs/hub.md, "Private hubs").

node.toml names the hubs and caches that need a token (`[[credentials]]`, parsed in
shim.node): `auth = "pod-token"` takes it from the pod, Flox's way: a Secret volume
mounted at /var/run/secrets/flox.dev holding `floxhub-token`; `auth = "node-token"` from a
root-only file on the node. The pod's token is found through the container's own mounts
in config.json (the mount whose destination is that directory, a Secret or projected volume
of this very pod), never through a path the pod author names.

Where a token goes:
- floxk's own requests (the hub's `latest` and pointers, narinfo signatures): the header
  `Authorization: Bearer TOKEN`, never passed on to a redirect's target;
- Nix's substitution: Nix 2.8 .. 2.26 take credentials for a binary cache only from a
  netrc file (no header option; the `bearer-token` store parameter of later Nix sits in
  the store URL, on the command line). So the token is written to a netrc file in a
  private directory (0700, tmpfs where there is one) for the one Nix call and removed
  after it; Nix sends it as HTTP Basic, login `floxk`, password the token. The command
  line names only that file.

Authorization is per pod: every create of a container fetches the environment's pointer
with its own pod's token, also when another pod realized the environment before; a
positive answer is remembered for `token_cache_ttl` seconds under an HMAC of the token
with a node-local key (state_dir/auth/), never the token itself. Tokens never reach a log,
the state dir, an error message or a command line.

Standard library only; imported only on nodes that configure credentials.
"""

from __future__ import annotations

import os
import stat

from shim.core.errors import AccessError, ConfigError, FloxkError
from shim.core.pids import start_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from shim.core.node import Credential, NodeConfig

POD_TOKEN = "pod-token"
NODE_TOKEN = "node-token"
SECRET_DIR = "/var/run/secrets/flox.dev"
TOKEN_KEY = "floxhub-token"
NETRC_LOGIN = "floxk"
MAX_TOKEN_BYTES = 16 << 10
AUTH_DIR = "auth"
# The kinds of kubelet volumes a pod's token may come from (pods/<uid>/volumes/<kind>/<name>).
_TOKEN_VOLUMES = ("kubernetes.io~secret", "kubernetes.io~projected")
_SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"


class Token:
    """A token; its repr and str never show it (it may end up in a traceback or a record)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Token(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac

        return isinstance(other, Token) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("floxk-token", self._value))


class Access:
    """The tokens one pod's (or the node's own) requests carry, by URL prefix.

    `pod`: a pod's mounts were looked at (a container create). Without it (the sandbox's
    prefetch, `floxk-node realize`), a pod-token hub is not asked at all: create asks it
    with the pod's token.
    """

    def __init__(
        self,
        entries: Sequence[tuple[Credential, Token | None]],
        *,
        pod: bool,
        state_dir: str,
        cache_ttl: float = 0.0,
        pod_error: AccessError | None = None,
    ) -> None:
        self.entries = list(entries)
        self.pod = pod
        self.state_dir = state_dir
        self.cache_ttl = cache_ttl
        # Why the pod's token could not be read: raised only when a pod-token URL is asked
        # (a pod of a public environment is not refused for its volumes).
        self.pod_error = pod_error

    def __repr__(self) -> str:
        return f"Access({len(self.entries)} credentials, pod={self.pod})"

    def credential(self, url: str) -> tuple[Credential, Token | None] | None:
        """The credential whose URL is `url` or a prefix of it at a path boundary."""
        for cred, token in self.entries:
            if covers(cred.url, url):
                return cred, token
        return None

    def header(self, url: str) -> str | None:
        """The Authorization header value for `url`, or None (a public URL, or no token)."""
        found = self.credential(url)
        if found is not None and found[0].auth == POD_TOKEN and self.pod_error is not None:
            raise self.pod_error
        if found is None or found[1] is None:
            return None
        return "Bearer " + found[1].reveal()

    def check_askable(self, hub: str, ref: str) -> None:
        """AccessError when `hub` needs a pod's token and this is not a pod's request."""
        found = self.credential(hub)
        if found is not None and found[0].auth == POD_TOKEN and not self.pod:
            raise AccessError(
                f'{hub} needs a pod\'s floxhub-token to resolve {ref} (auth = "pod-token" in '
                "the node configuration); nothing is realized without one",
                hint="the environment is fetched when a pod's container is created, with "
                "that pod's token",
            )

    def refused(self, hub: str, ref: str, code: int) -> AccessError:
        """The error for a hub that answered `code` (401/403) to a request for `ref`."""
        found = self.credential(hub)
        if found is not None and found[0].auth == NODE_TOKEN:
            return AccessError(
                f"{hub} refused the node's token for {ref} (HTTP {code})",
                hint=f"check the token in {found[0].token_file} (credentials in the node "
                "configuration)",
            )
        if found is not None and found[1] is None:
            return AccessError(
                f"{hub} requires a token for {ref} and this pod has none (HTTP {code})",
                hint=f"mount a Secret holding the key {TOKEN_KEY} at {SECRET_DIR} in the pod's "
                "container (Flox's private environments)",
            )
        if found is not None:
            return AccessError(
                f"{hub} refused this pod's {TOKEN_KEY} for {ref} (HTTP {code})",
                hint=f"the Secret mounted at {SECRET_DIR} must hold a token this hub accepts "
                f"for {ref}",
            )
        return AccessError(
            f"{hub} refused the request for {ref} (HTTP {code}): it needs credentials",
            hint='mark it with [[credentials]] url = "..." auth = "pod-token" (or '
            '"node-token") in the node configuration',
        )

    # --- the short-lived positive cache ------------------------------------------------
    def _cache_file(self, url: str) -> str | None:
        if self.cache_ttl <= 0:
            return None
        found = self.credential(url)
        if found is None or found[1] is None:
            return None
        from shim.core.digest import sha256

        fp = fingerprint(self.state_dir, found[1])
        name = sha256(url.encode()).hexdigest()[:32]
        return os.path.join(self.state_dir, AUTH_DIR, "ok", fp, name)

    def cached(self, url: str) -> str | None:
        """What `url` answered this token within the last cache_ttl seconds, or None."""
        path = self._cache_file(url)
        if path is None:
            return None
        import time

        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            age = time.time() - st.st_mtime
            if not 0 <= age < self.cache_ttl or st.st_uid != os.geteuid():
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(1 << 20)
        finally:
            os.close(fd)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def remember(self, url: str, text: str) -> None:
        """Remember that this token was given `text` for `url` (only ever a success)."""
        path = self._cache_file(url)
        if path is None:
            return
        from shim.core.atomic import write_atomic

        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_atomic(path, text.encode("utf-8"), 0o600)
        except OSError:
            pass  # a cache: the next create asks the hub again
        self._prune(os.path.dirname(os.path.dirname(path)))

    def _prune(self, top: str) -> None:
        """Drop answers older than cache_ttl (and emptied token dirs): the cache never
        outgrows the pods of the last minutes. Only on a miss, so warm creates skip it."""
        import time

        now = time.time()
        try:
            tokens = list(os.scandir(top))
        except OSError:
            return
        for token_dir in tokens:
            try:
                for entry in os.scandir(token_dir.path):
                    if now - entry.stat(follow_symlinks=False).st_mtime >= self.cache_ttl:
                        os.unlink(entry.path)
                os.rmdir(token_dir.path)  # fails while it holds a fresh answer: kept
            except OSError:
                continue


def covers(prefix: str, url: str) -> bool:
    """`url` is `prefix` or lies below it (path boundary; a trailing / is ignored)."""
    base = prefix.rstrip("/")
    return url.rstrip("/") == base or url.startswith(base + "/")


def url_host(url: str) -> str:
    """The host of an http(s) URL (no userinfo, no port): what netrc's `machine` matches."""
    rest = url.partition("://")[2]
    netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1]
    return netloc.partition(":")[0].lower()


def access_for(node: NodeConfig, spec: dict | None) -> Access | None:
    """The Access of a create of the container `spec` (config.json), or of the node itself
    (spec None: no pod's token). None when the node configures no credentials."""
    if not node.credentials:
        return None
    pod = spec is not None
    pod_token, pod_error = None, None
    if spec is not None and _needs_pod_token(node):
        try:
            pod_token = pod_token_of(spec)
        except AccessError as e:
            pod_error = e
    entries = []
    for cred in node.credentials:
        token = pod_token if cred.auth == POD_TOKEN else read_token_file(cred.token_file or "")
        entries.append((cred, token))
    return Access(
        entries, pod=pod, state_dir=node.state_dir, cache_ttl=node.token_cache_ttl,
        pod_error=pod_error,
    )  # fmt: skip


def _needs_pod_token(node: NodeConfig) -> bool:
    return any(c.auth == POD_TOKEN for c in node.credentials)


def pod_token_of(spec: dict) -> Token | None:
    """The token of the pod whose container `spec` is: the `floxhub-token` of the volume
    the container mounts at /var/run/secrets/flox.dev; None when it mounts nothing there.

    The volume must be a Secret (or projected) volume of this very pod, as kubelet lays
    them out (…/pods/<the sandbox's uid>/volumes/kubernetes.io~secret/<name>), and the file
    must stay inside it (kubelet's `..data` links do): an emptyDir, a hostPath or another
    pod's volume is refused, so no pod borrows another's token or the node's files."""
    from shim.core.spec import mount_destination

    mounts = [
        m
        for m in spec.get("mounts") or []
        if isinstance(m, dict) and mount_destination(m.get("destination")) == SECRET_DIR
    ]
    if not mounts:
        return None
    source = mounts[-1].get("source")  # the last mount at a destination is what runc shows
    uid = (spec.get("annotations") or {}).get(_SANDBOX_UID)
    if not isinstance(source, str) or not source.startswith("/"):
        raise AccessError(f"the volume at {SECRET_DIR} has no host directory")
    real = os.path.realpath(source)
    parts = real.split("/")
    if not (
        isinstance(uid, str)
        and uid
        and len(parts) >= 6
        and parts[-5:-2] == ["pods", uid, "volumes"]
        and parts[-2] in _TOKEN_VOLUMES
    ):
        raise AccessError(
            f"the volume at {SECRET_DIR} is not a Secret of this pod: floxk reads "
            f"{TOKEN_KEY} only from a Secret (or projected) volume",
            hint=f"mount a Secret holding {TOKEN_KEY} at {SECRET_DIR} (not an emptyDir, a "
            "hostPath or a configMap)",
        )
    file = os.path.realpath(os.path.join(real, TOKEN_KEY))
    if not file.startswith(real + "/"):
        raise AccessError(
            f"{TOKEN_KEY} in the volume at {SECRET_DIR} links out of the volume: refused",
            hint=f"the Secret's key {TOKEN_KEY} must be a plain file of the Secret",
        )
    try:
        return _read_token(file, f"{TOKEN_KEY} of the volume at {SECRET_DIR}")
    except FileNotFoundError:
        raise AccessError(
            f"the volume at {SECRET_DIR} holds no {TOKEN_KEY}",
            hint=f"the Secret needs the key {TOKEN_KEY} (kubectl create secret generic NAME "
            f"--from-file={TOKEN_KEY}=PATH)",
        ) from None


def read_token_file(path: str) -> Token:
    """A node-wide token: a regular file owned by root (this process's user) and readable
    by nobody else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(
            f"cannot read the token file {path}: {e.strerror}",
            hint="token_file of [[credentials]] in the node configuration",
        ) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ConfigError(
                f"the token file {path} must be owned by {'root' if os.geteuid() == 0 else 'me'}"
                " and readable by nobody else",
                hint=f"chown root {path} && chmod 600 {path}",
            )
    finally:
        os.close(fd)
    return _read_token(path, f"the token file {path}", error=ConfigError)


def _read_token(path: str, what: str, *, error: type[FloxkError] = AccessError) -> Token:
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} is not a regular file")
        if st.st_size > MAX_TOKEN_BYTES:
            raise error(f"{what} is larger than {MAX_TOKEN_BYTES} bytes: not a token")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
    finally:
        os.close(fd)
    value = data.strip()
    # Visible ASCII only: it goes into an HTTP header and a netrc line (no CR/LF, no blank).
    if not value or len(data) > MAX_TOKEN_BYTES or not all(0x21 <= b <= 0x7E for b in value):
        raise error(
            f"{what} is not a token ({len(data)} bytes; a token is printable ASCII without spaces)"
        )
    return Token(value.decode("ascii"))


def fingerprint(state_dir: str, token: Token) -> str:
    """HMAC-SHA256 of the token with the node's own key (state_dir/auth/key, root's): a
    name for it that cannot be guessed back from the state dir."""
    import hmac

    key_file = os.path.join(state_dir, AUTH_DIR, "key")
    try:
        with open(key_file, "rb") as f:
            key = f.read()
    except FileNotFoundError:
        key = b""
    if len(key) < 32:
        from shim.core.atomic import write_atomic

        os.makedirs(os.path.dirname(key_file), mode=0o700, exist_ok=True)
        fresh = os.urandom(32)
        try:  # first writer wins: two creates must agree on the key
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(fresh)
            key = fresh
        except FileExistsError:
            with open(key_file, "rb") as f:
                key = f.read()
            if len(key) < 32:  # damaged: replace it (remembered answers are only lost)
                write_atomic(key_file, fresh, 0o600)
                key = fresh
    return hmac.new(key, token.reveal().encode(), "sha256").hexdigest()[:40]


class netrc_options:  # noqa: N801 -- used like a function: `with netrc_options(...) as opts:`
    """Nix options giving the tokens for `urls` (substituters) through a private netrc
    file: ["--option", "netrc-file", PATH] while the block runs, [] without tokens."""

    def __init__(self, access: Access | None, urls: Sequence[str]) -> None:
        self.lines: dict[str, str] = {}
        for url in urls:
            header = access.header(url) if access is not None else None
            if header is not None:
                self.lines.setdefault(url_host(url), header.partition(" ")[2])
        self.directory: str | None = None

    def __enter__(self) -> list[str]:
        if not self.lines:
            return []
        import tempfile

        shm = "/dev/shm"  # tmpfs: the token never reaches a disk
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
        sweep_netrc_dirs(base)
        self.directory = tempfile.mkdtemp(prefix=_netrc_prefix(os.getpid()), dir=base)  # 0700
        path = os.path.join(self.directory, "netrc")
        text = "".join(
            f"machine {host} login {NETRC_LOGIN} password {token}\n"
            for host, token in self.lines.items()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return ["--option", "netrc-file", path]

    def __exit__(self, *exc: object) -> None:
        if self.directory is not None:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


NETRC_PREFIX = "floxk-netrc-"


def _netrc_prefix(pid: int) -> str:
    """floxk-netrc-PID.STARTTIME-: whose directory it is, even after the pid is reused."""
    return f"{NETRC_PREFIX}{pid}.{start_time(pid)}-"


def sweep_netrc_dirs(base: str) -> list[str]:
    """Remove the netrc directories in `base` whose process is gone (a floxk-runc killed
    with SIGKILL never runs __exit__); only ours (same owner), never a live process's.
    Returns the paths removed."""
    import shutil

    removed: list[str] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        owner, dot, since = name.removeprefix(NETRC_PREFIX).partition("-")[0].partition(".")
        if not name.startswith(NETRC_PREFIX) or not dot or not owner.isdigit():
            continue
        if start_time(int(owner)) == since:
            continue  # its process still runs
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def hosts_conflict(credentials: Sequence[Credential]) -> Iterator[str]:
    """Hosts named by credentials that would need different tokens (netrc is per host)."""
    seen: dict[str, tuple[str, str | None]] = {}
    for cred in credentials:
        host = url_host(cred.url)
        what = (cred.auth, cred.token_file)
        if seen.setdefault(host, what) != what:
            yield host
