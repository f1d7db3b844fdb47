"""The current cluster's dev hub: where `floxk env push` goes when --to is omitted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from floxk._cluster import kube
from floxk._cluster.spec import cluster_files, parse_context
from shim.core.errors import NotFoundError


@dataclass(frozen=True)
class DevHub:
    context: str
    url: str  # file:// binary cache + hub, mounted into every node
    signing_key: Path


def current_dev_hub(context: str | None = None) -> DevHub:
    """The dev hub of `context` (default: the kubeconfig's current context)."""
    context = context or kube.current_context()
    parsed = parse_context(context)
    files = cluster_files(*parsed) if parsed else None
    if context is None or files is None or not files.secret_key.exists():
        raise NotFoundError(
            f"no floxk dev cluster for the current context ({context or 'none'})",
            hint="create one with `floxk up`, or pass --to URL (and --signing-key) explicitly",
        )
    return DevHub(context=context, url=files.hub_url, signing_key=files.secret_key)
