"""A directory served over plain HTTP (localhost by default), counting what it sends: an http:// hub.

A hub is a static layout next to a Nix binary cache (docs/hub.md), so any static file server
serves one; this one runs in a thread of the calling process and counts the bytes of every
response body, so a benchmark can tell what a node fetched.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from pathlib import Path


class _Counting(http.server.SimpleHTTPRequestHandler):
    server: StaticServer
    # HTTP/1.1 with keep-alive, as any real static server: Nix's curl waits for a
    # connection to the host it might reuse (CURLOPT_PIPEWAIT), so against HTTP/1.0 (one
    # connection per request) every download would wait for the one before it. No Nagle:
    # headers and body are separate writes, which it would hold for the client's
    # delayed ACK (40 ms per response on a kept-alive connection).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def log_request(self, code="-", size="-") -> None:  # once per request answered
        with self.server.lock:
            self.server.requests += 1

    def copyfile(self, source, outputfile) -> None:
        while chunk := source.read(1 << 16):
            with self.server.lock:  # before the write: a client that read it sees it counted
                self.server.bytes_sent += len(chunk)
            outputfile.write(chunk)


class StaticServer(http.server.ThreadingHTTPServer):
    """Serve `directory` on `address` (default 127.0.0.1; a kind network's gateway for its
    nodes), a free port, until close(); `bytes_sent` counts response bodies, `requests` the
    requests answered."""

    daemon_threads = True
    # The kernel's listen backlog, as Go's net.Listen (the registry) and nginx take it, not
    # socketserver's 5: Nix opens up to 25 connections at once (its narinfo lookups), and
    # a connection the full accept queue drops is retried by the client's TCP after 1 s,
    # which made most cold realizations over this server a second or more slower.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, directory: Path, address: str = "127.0.0.1") -> None:
        handler = functools.partial(_Counting, directory=str(directory))
        super().__init__((address, 0), handler)
        self.lock = threading.Lock()
        self.bytes_sent = 0
        self.requests = 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> StaticServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
