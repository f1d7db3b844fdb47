"""The lock digest: sha256 over a lock's canonical JSON. Same content, same digest.

A module of its own so that a node finds an environment it already realized (its tree is
named by this digest) without importing the lock model. Standard library only.
"""

from __future__ import annotations

from shim.core import fastjson  # not json: its import costs milliseconds per create

try:  # CPython's built-in sha256: hashlib would load OpenSSL first, milliseconds per process
    from _sha256 import sha256  # Python 3.11
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        from hashlib import sha256


def lock_digest(raw: object) -> str:
    """sha256 hex of `raw` (a lock as JSON data) serialized canonically."""
    canonical = fastjson.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256(canonical.encode("utf-8")).hexdigest()
