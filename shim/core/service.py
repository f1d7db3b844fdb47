"""The environment service: ref -> node policy -> hub record (verified) -> realized tree.

The one gate for everything that realizes for a node: a pod's create (shim.runc), the
sandbox prefetch (shim.wrapper), `floxk-node realize` (shim.nodecli) and `floxk env
realize`. On the create path: standard library only, and nothing slow at the top
(tests/shim/test_hot_path_imports.py).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds at every start; only type checkers need it
if TYPE_CHECKING:
    from shim.core import annotations as ann
    from shim.core.node import NodeConfig


def fetch_for(
    ref: ann.EnvRef, node: NodeConfig, *, insecure_accept_unsigned: bool = False, access=None
):
    """The one gate for everything that realizes for a node (pods, the sandbox prefetch,
    `floxk-node realize`, `floxk env realize`): the node's owner policy, then the record
    from the node's hubs, verified with the node's keys (a shim.core.hub.RawRecord).

    `access`: the tokens of a pod's create (shim.core.auth.access_for with its spec);
    without it, the node's own (node-token credentials; a pod-token hub is not asked)."""
    from shim.core.errors import RealizeError

    allowed = node.policy.allowed_owners
    if allowed and ref.owner not in allowed:
        raise RealizeError(
            f"environment owner {ref.owner!r} is not allowed on this node ({ref})",
            hint=f"this node accepts environments of: {', '.join(allowed)} "
            f"(policy.allowed_owners in {node.source})",
        )
    if not node.hubs:
        raise RealizeError(
            f"cannot resolve {ref}: this node has no hub configured",
            hint=f'set hubs = ["file:///..."] in {node.source}',
        )
    from shim.core import hub

    if access is None:
        access = _node_access(node)
    return hub.fetch(str(ref), node.hubs, trust_of(node, insecure_accept_unsigned, access))


def trust_of(node: NodeConfig, insecure_accept_unsigned: bool = False, access=None):
    """The node's shim.core.hub.Trust: its caches, keys, store and state dir (and `access`,
    the tokens of private hubs and caches)."""
    from shim.core.hub import Trust

    return Trust(
        substituters=node.substituters,
        trusted_keys=node.trusted_public_keys,
        state_dir=node.state_dir,
        store_root=node.store_root,
        insecure_accept_unsigned=insecure_accept_unsigned,
        access=access,
    )


def _node_access(node: NodeConfig):
    """The node's own tokens (node-token credentials), None without credentials."""
    if not node.credentials:
        return None
    from shim.core.auth import access_for

    return access_for(node, None)


def realize_record(
    record,
    node: NodeConfig,
    *,
    system: str | None = None,
    insecure_accept_unsigned: bool = False,
    access=None,
):
    """Realize a record fetch_for() gave (a shim.core.hub.RawRecord) with the node's caches,
    keys and store; a tree realized before is found from the record's digest alone.
    `access`: the tokens fetch_for() used (private caches)."""
    from shim.core import realize
    from shim.core.model import current_system

    found = realize.ready(node.state_dir, record.digest)
    if found is not None:
        return found
    import time

    from shim.core import pressure, stats
    from shim.core.records import fields

    start = time.monotonic()
    ms: dict[str, float] = {}
    access = access if access is not None else _node_access(node)
    # The node's Trust, whose fields are realize()'s caches, keys, store and state dir by name.
    trust = fields(trust_of(node, insecure_accept_unsigned, access))
    env = realize.realize(
        record.parsed().lock, system=system or current_system(), phases=ms, **trust
    )
    if "tree" in ms:  # this process built the tree (not another one meanwhile)
        stats.emit(
            node.log_path, "realize", env=f"{record.owner}/{record.name}:{record.generation}",
            digest=env.digest, seconds=round(time.monotonic() - start, 3), ms=ms,
            paths=len(env.activation.get("closure") or []),
        )  # fmt: skip
        pressure.after_realization(node)
    return env


def realize_for(ref: ann.EnvRef, node: NodeConfig, **options):
    """fetch_for + realize_record within the node's deadline: `floxk-node realize`."""
    insecure = options.get("insecure_accept_unsigned", False)
    with realize_deadline(ref, node) as limit:
        found = fetch_for(ref, node, insecure_accept_unsigned=insecure)
        limit.digest(found.digest)
        return realize_record(found, node, **options)


class realize_deadline:  # noqa: N801 -- used like a function: `with realize_deadline(ref, node):`
    """node.toml's realize_timeout over resolving and realizing `ref`: past it, every
    process the realization started is killed, what it left half done is removed
    (shim.core.realize.abandon, once the digest is known: call digest()), and a RealizeError
    says which environment, after how long, and what to check."""

    def __init__(self, ref: ann.EnvRef, node: NodeConfig) -> None:
        from shim.core.realize import deadline

        seconds = node.realize_timeout
        caches = ", ".join(node.substituters) or "none configured"
        self.node, self.ref = node, str(ref)
        self.limit = deadline(
            seconds,
            f"realizing {ref} did not finish within {seconds:g} s (realize_timeout in "
            f"{node.source}): stopped it and everything it started, nothing of it is kept",
            hint=f"check that this node reaches its hubs ({', '.join(node.hubs)}) and "
            f"substituters ({caches}) and that they answer; the node log {node.log_path} "
            "shows the last step; the next pod retries (raise realize_timeout for very "
            "large environments)",
        )

    def digest(self, digest: str) -> None:

        self.limit.cleanup = lambda: self._expired(digest)

    def _expired(self, digest: str | None) -> None:
        from shim.core import stats
        from shim.core.realize import abandon

        node = self.node
        removed = abandon(node.state_dir, node.store_root, digest) if digest else []
        stats.emit(node.log_path, "timeout", env=self.ref, digest=digest,
                   seconds=node.realize_timeout, removed=removed)  # fmt: skip

    def __enter__(self) -> realize_deadline:
        self.limit.cleanup = lambda: self._expired(None)
        self.limit.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.limit.__exit__(*exc)
