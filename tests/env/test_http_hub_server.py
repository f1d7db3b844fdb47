"""testkit.httpserve, the http:// hub of the benchmarks and tests: it must take as many
connections at once as Nix opens (http-connections, 25 by default) without the clients
waiting for TCP's retry of a dropped connection (1 s)."""

from __future__ import annotations

import select
import socket
import time

from testkit.httpserve import StaticServer

NIX_HTTP_CONNECTIONS = 25  # Nix's default http-connections: its narinfo lookups at once


def _connect_all(address: tuple[str, int], count: int, wait: float) -> int:
    """Open `count` connections at once (non-blocking); how many the kernel completed
    within `wait` seconds."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.setblocking(False)
            s.connect_ex(address)
        pending, done, end = set(socks), 0, time.monotonic() + wait
        while pending and (left := end - time.monotonic()) > 0:
            _, writable, _ = select.select([], list(pending), [], left)
            for s in writable:
                pending.discard(s)
                done += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        return done
    finally:
        for s in socks:
            s.close()


def test_a_burst_of_connections_is_queued_while_the_server_is_busy(tmp_path):
    # The serving thread stopped: nothing accepts, as on a loaded machine where it lags
    # behind; the kernel's accept queue alone must hold the burst. With socketserver's
    # default backlog (5) all but ~6 of the connections wait for a SYN retry (1 s).
    server = StaticServer(tmp_path)
    try:
        server.shutdown()  # the socket stays open, listening: only accepting stops
        count = NIX_HTTP_CONNECTIONS + 7
        assert _connect_all(server.server_address[:2], count, wait=0.5) == count
    finally:
        server.server_close()


def test_it_serves_and_counts(tmp_path):
    import urllib.request

    (tmp_path / "nix-cache-info").write_text("StoreDir: /nix/store\n")
    with StaticServer(tmp_path) as server:
        with urllib.request.urlopen(f"{server.url}/nix-cache-info", timeout=10) as r:
            assert r.read() == b"StoreDir: /nix/store\n"
        assert server.bytes_sent == len("StoreDir: /nix/store\n")
        assert server.requests == 1
