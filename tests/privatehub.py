"""A private hub for the token tests: a signed file:// hub and cache published with the
real `floxk env push`, served by a real nginx (Debian's, scripts/install-system.sh) that
answers 401 to every request without the right token. Run as the test's own process on a
free localhost port, its config, logs and temp dirs in the test's temp dir.

The server accepts the token the way docs/hub.md's example does: `Authorization: Bearer
TOKEN` (floxk's own requests) or HTTP Basic with the password TOKEN (Nix's, from the netrc
file floxk gives it). Its access log records every request's status and which form of
credentials it carried (never the credentials).
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from shim.core.auth import NETRC_LOGIN, SECRET_DIR, TOKEN_KEY
from testkit.net import free_port

TOKEN = "floxhub-test-token.c29tZSB0b2tlbg-A1"  # what a pod's Secret holds
WRONG = "floxhub-wrong-token.bm90IGl0-B2"
PLAIN = 'version = 1\n[install]\nhello.pkg-path = "hello"\nbusybox.pkg-path = "busybox"\n'
PRIVATE = PLAIN + '[vars]\nWHO = "private"\n'


def nginx_path() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.skip("needs nginx: run scripts/install-system.sh")
    return found


_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    default_type application/octet-stream;
    map_hash_bucket_size 256;
    map $http_authorization $floxk_token_ok {{
        default 0;
{accepted}
    }}
    map $http_authorization $floxk_auth_form {{
        default none;
        "~^Bearer " bearer;
        "~^Basic " basic;
    }}
    log_format floxk '$status $floxk_auth_form $request_uri';
    access_log {work}/access.log floxk;
    server {{
        listen {host}:{port};
        root {root};
        location / {{
            if ($floxk_token_ok = 0) {{ return 401; }}
        }}
{moved}    }}
}}
"""


class Nginx:
    """nginx serving `root` to requests carrying one of `tokens`."""

    def __init__(
        self,
        root: Path,
        tokens: list[str],
        work: Path,
        host: str = "127.0.0.1",
        *,
        redirect: dict[str, str] | None = None,
    ) -> None:
        """redirect: {path prefix: URL}: requests with the token under the prefix get a 302
        to URL + the request's path (a hub that moved, or one that sends clients away)."""
        self.root, self.work, self.host = Path(root), Path(work), host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        accepted = []
        for token in tokens:
            basic = base64.b64encode(f"{NETRC_LOGIN}:{token}".encode()).decode()
            accepted += [f'        "Bearer {token}" 1;', f'        "Basic {basic}" 1;']
        moved = "".join(
            f"        location {prefix} {{\n"
            "            if ($floxk_token_ok = 0) { return 401; }\n"
            f"            return 302 {target}$request_uri;\n"
            "        }\n"
            for prefix, target in (redirect or {}).items()
        )
        (self.work / "tmp").mkdir(parents=True, exist_ok=True)
        self.config = self.work / "nginx.conf"
        self.config.write_text(
            _CONFIG.format(
                work=self.work,
                root=self.root,
                host=self.host,
                port=self.port,
                accepted="\n".join(accepted),
                moved=moved,
            )
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        self.process = subprocess.Popen(
            [nginx_path(), "-p", str(self.work), "-c", str(self.config), "-e",
             str(self.work / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def logs(self) -> list[Path]:
        return [p for p in (self.work / "access.log", self.work / "error.log") if p.exists()]

    def requests(self) -> list[tuple[str, str, str]]:
        """(status, credentials form, path) of every request so far. nginx logs a request
        after answering it, so the log is read once it has stopped growing for 0.3 s."""
        log = self.work / "access.log"
        size, deadline = -1, time.monotonic() + 10
        while time.monotonic() < deadline:
            now = log.stat().st_size if log.exists() else 0
            if now == size:
                break
            size = now
            time.sleep(0.3)
        lines = log.read_text().splitlines() if log.exists() else []
        return [tuple(line.split(" ", 2)) for line in lines]  # type: ignore[misc]


def publish_private_hub(work: Path) -> SimpleNamespace:
    """acme/private (and acme/public) pushed signed to a file:// cache; returns cache,
    key (the trusted public key line) and refs."""
    from e2e.catalog import prepare
    from floxk._lock import lock_environment
    from floxk._push import push_environment
    from testkit.nix import make_key_pair

    catalog = prepare(work / "catalog")
    public, secret = make_key_pair(work / "keys", "floxk-private-1")
    cache = work / "cache"
    refs = {}
    for name, manifest in {"private": PRIVATE}.items():
        d = work / "envs" / name
        d.mkdir(parents=True)
        (d / "manifest.toml").write_text(manifest)
        lock_environment(d, catalog=catalog)
        pushed = push_environment(d, to=cache.as_uri(), name=f"acme/{name}", signing_key=secret)
        refs[name] = f"acme/{name}"
        refs[f"{name}_digest"] = pushed.digest
    return SimpleNamespace(cache=cache, key=public, refs=refs)


@contextlib.contextmanager
def served_hub(work: Path, host: str = "127.0.0.1") -> Iterator[tuple[SimpleNamespace, Nginx]]:
    """publish_private_hub() served by nginx accepting TOKEN: (published, server)."""
    published = publish_private_hub(work / "hub")
    server = Nginx(published.cache, [TOKEN], work / "nginx", host=host).start()
    try:
        yield published, server
    finally:
        server.stop()


def secret_volume(base: Path, pod_uid: str, token: str | None, name: str = "flox-token") -> Path:
    """A Secret volume laid out as kubelet writes one (pods/<uid>/volumes/kubernetes.io~secret/
    NAME, the key a link through ..data to a timestamped dir); its host directory."""
    volume = base / "kubelet" / "pods" / pod_uid / "volumes" / "kubernetes.io~secret" / name
    stamp = volume / "..2026_12_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    if token is not None:
        (stamp / TOKEN_KEY).write_text(token + "\n")
        (stamp / TOKEN_KEY).chmod(0o644)
    (volume / "..data").symlink_to(stamp.name)
    if token is not None:
        (volume / TOKEN_KEY).symlink_to(f"..data/{TOKEN_KEY}")
    return volume


def token_mount(source: Path) -> dict:
    """The OCI mount kubelet + containerd give a Secret volume at Flox's path."""
    return {
        "destination": SECRET_DIR,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "rprivate", "ro"],
    }


def assert_token_nowhere(token: str, *places: Path) -> None:
    """No file under `places` holds the token (nor its Basic form)."""
    forms = [token.encode(), base64.b64encode(f"{NETRC_LOGIN}:{token}".encode())]
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for f in files:
            if f.is_symlink():
                continue
            data = f.read_bytes()
            assert not any(form in data for form in forms), f"the token is in {f}"
