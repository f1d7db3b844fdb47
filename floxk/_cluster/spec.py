"""What a cluster is made of (ClusterSpec), its content hash, and where its host files live.

The hash covers everything that shapes the cluster (provider, name, workers, Kubernetes
version, node image, containerd patch, mounts, the user's kind config): `floxk up` records it in the cluster and a
second `up` with the same hash changes nothing (ctlptl's model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from floxk._cluster import provider as providers
from floxk._cluster.constants import DEFAULT_K8S_VERSION
from shim.core.errors import ConfigError

# kind and k3d name kubeconfig contexts <provider>-<cluster>.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


@dataclass(frozen=True)
class Mount:
    host_path: str
    node_path: str
    read_only: bool = True


@dataclass(frozen=True)
class ClusterSpec:
    provider: str
    name: str
    workers: int = 0
    k8s_version: str = DEFAULT_K8S_VERSION
    node_image: str = ""  # the floxk node image (built from the provider's base image)
    containerd_patch: str = ""  # TOML merged into every node's containerd config
    mounts: tuple[Mount, ...] = field(default_factory=tuple)
    # The user's kind Cluster config (`floxk up --config`) as canonical JSON; "" for none.
    kind_config: str = ""

    def __post_init__(self) -> None:
        validate_name(self.name)
        providers.check_name(self.provider)
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")

    @property
    def context(self) -> str:
        return context_name(self.provider, self.name)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not data["kind_config"]:
            del data["kind_config"]  # clusters made without --config keep their digest
        return data

    def digest(self) -> str:
        """sha256 over the canonical JSON of the spec: same spec, same digest."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"invalid cluster name {name!r}",
            hint="use lowercase letters, digits and '-', at most 32 characters",
        )
    return name


def context_name(provider: str, name: str) -> str:
    """The kubeconfig context kind and k3d create: kind-NAME, k3d-NAME."""
    return f"{provider}-{name}"


def parse_context(context: str | None) -> tuple[str, str] | None:
    """(provider, name) of a kind-N / k3d-N context; None for any other context."""
    for provider in providers.NAMES:
        prefix = provider + "-"
        if context and context.startswith(prefix) and len(context) > len(prefix):
            return provider, context[len(prefix) :]
    return None


def data_dir() -> Path:
    """floxk's per-user data: $XDG_DATA_HOME/floxk (default ~/.local/share/floxk)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "floxk"


def cache_dir() -> Path:
    """floxk's cache: $FLOXK_CACHE (default ~/.cache/floxk), shared with the build scripts."""
    base = os.environ.get("FLOXK_CACHE") or os.path.join(Path.home(), ".cache", "floxk")
    return Path(base)


@dataclass(frozen=True)
class ClusterFiles:
    """Host files of one cluster: its dev hub (a signed binary cache), signing key, node.toml."""

    root: Path

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def secret_key(self) -> Path:
        return self.root / "keys" / "signing.sec"

    @property
    def public_key(self) -> Path:
        return self.root / "keys" / "signing.pub"

    @property
    def node_toml(self) -> Path:
        return self.root / "node.toml"

    @property
    def spec_json(self) -> Path:
        return self.root / "spec.json"

    @property
    def hub_url(self) -> str:
        return "file://" + str(self.hub)


def cluster_files(provider: str, name: str) -> ClusterFiles:
    return ClusterFiles(data_dir() / "clusters" / context_name(provider, name))
