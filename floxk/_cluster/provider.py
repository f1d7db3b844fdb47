"""What a cluster provider does (the Provider protocol) and the one registry of providers.

As kind's `providers.Provider` (pkg/cluster/internal/providers/provider.go) hides Docker,
Podman and nerdctl behind one interface, this hides kind and k3d from `floxk up`, `down`,
`status`, `doctor` and the e2e suite: each is a class in its own module (kind.py, k3d.py)
that drives its CLI, and `get(name)` is the only way to reach one. The provider's name is
its CLI's name and the prefix of the kubeconfig contexts it writes (kind-NAME, k3d-NAME).
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shim.core.errors import ConfigError

if TYPE_CHECKING:
    from floxk._cluster.spec import ClusterSpec


class Provider(Protocol):
    name: str  # kind | k3d: its CLI, and its contexts' prefix

    def exists(self, name: str) -> bool:
        return name in self.clusters()

    def check_create(self) -> None:
        """Raise FloxkError (with the reason and what to use instead) when this floxk
        cannot create clusters with this provider; `up` asks before it builds anything."""
        ...

    def create(self, spec: ClusterSpec, config_dir: Path, *, wait_seconds: int | None) -> None:
        """Write the provider's cluster config into config_dir and create the cluster."""
        ...

    def node_count(self, spec: ClusterSpec) -> int: ...

    def delete(self, name: str) -> None: ...

    def clusters(self) -> list[str]: ...

    def node_containers(self, name: str) -> list[str]:
        """The Docker containers that are the cluster's nodes, sorted."""
        ...

    def load_image(self, name: str, image: str) -> None:
        """Put an image of the local Docker Engine into every node (no registry)."""
        ...

    def kubeconfig(self, name: str) -> str:
        """The cluster's kubeconfig (YAML) as the provider's CLI writes it."""
        ...


# name -> the module whose PROVIDER it is (imported on first use: spec.py checks names here
# and kind.py/k3d.py import spec.py).
_MODULES = {"kind": "floxk._cluster.kind", "k3d": "floxk._cluster.k3d"}
NAMES = tuple(_MODULES)


def check_name(name: str) -> str:
    if name not in _MODULES:
        raise ConfigError(f"unknown provider {name!r}", hint=f"use one of: {', '.join(NAMES)}")
    return name


def get(name: str) -> Provider:
    """The provider called `name`; ConfigError naming the known ones otherwise."""
    return importlib.import_module(_MODULES[check_name(name)]).PROVIDER


def installed() -> list[Provider]:
    """The providers whose CLI is on PATH, in registry order."""
    return [get(name) for name in NAMES if shutil.which(name)]
