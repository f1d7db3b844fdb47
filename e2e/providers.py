"""Cluster managers for the suite: pytest-kubernetes' providers, subclassed to drive floxk.

pytest-kubernetes (0.9) gives a manager per provider with create()/delete()/ready() and a
kubeconfig of its own. Its kind and k3d managers shell out to `kind create cluster`; ours
call floxk's own `up` and `down` instead, so the suite verifies clusters exactly as
`floxk up` makes them. Its pitfalls, handled here:
- cluster names get a "pytest-" prefix: _set_cluster_name keeps floxk's name verbatim;
- delete() unlinks the kubeconfig it was given: every manager gets a private copy;
- it has no provider registry: make_manager() picks the class.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pytest_kubernetes.options import ClusterOptions
from pytest_kubernetes.providers.base import AClusterManager
from pytest_kubernetes.providers.external import ExternalManagerBase
from pytest_kubernetes.providers.k3d import K3dManagerBase
from pytest_kubernetes.providers.kind import KindManagerBase

from floxk._cluster import provider as providers
from floxk._cluster.spec import context_name, parse_context
from floxk._e2e import PROVIDERS
from shim.core.errors import ConfigError, NotFoundError

Progress = Callable[[str], None]


def private_kubeconfig(source: Path | None = None) -> Path:
    """A kubeconfig file only this run owns (a copy of `source`, or empty)."""
    fd, name = tempfile.mkstemp(prefix="floxk-e2e-kubeconfig-")
    with open(fd, "wb") as out:
        if source is not None:
            out.write(Path(source).read_bytes())
    return Path(name)


class _FloxkUpManager(AClusterManager):
    """A cluster made by `floxk up` and removed by `floxk down` (provider in `provider`)."""

    provider = ""
    workers = 0
    base_image: str | None = None
    timeout = 600
    progress: Progress | None = None
    up_result: dict | None = None

    def _set_cluster_name(self, cluster_name, provider_config) -> str:
        self._cluster_options.cluster_name = cluster_name
        return cluster_name

    def _ensure_executable(self) -> None:
        pass  # floxk's own code reports a missing kind/docker with its hint

    def _on_create(self, cluster_options: ClusterOptions, **kwargs) -> None:
        from floxk._cluster.up import up

        self.up_result = up(
            provider=self.provider,
            name=self.cluster_name,
            workers=self.workers,
            base_image=self.base_image,
            timeout=self.timeout,
            progress=self.progress,
        )
        text = providers.get(self.provider).kubeconfig(self.cluster_name)
        Path(cluster_options.kubeconfig_path).write_text(text)
        self.context = context_name(self.provider, self.cluster_name)

    def _on_delete(self) -> None:
        from floxk._cluster.up import down

        down(provider=self.provider, name=self.cluster_name)

    def load_image(self, image: str) -> None:
        providers.get(self.provider).load_image(self.cluster_name, image)


class FloxkKindManager(_FloxkUpManager, KindManagerBase):
    provider = "kind"


class FloxkK3dManager(_FloxkUpManager, K3dManagerBase):
    provider = "k3d"


class FloxkExistingManager(ExternalManagerBase):
    """The cluster of a kubeconfig's current context: never created, never deleted here."""

    def load_image(self, image: str) -> None:
        """kind and k3d clusters take local images; any other cluster needs a registry."""
        ctx = self.context or ""
        parsed = parse_context(ctx)
        if parsed and shutil.which(parsed[0]):
            providers.get(parsed[0]).load_image(parsed[1], image)
            return
        raise NotFoundError(
            f"cannot load {image} into context {ctx!r}: not a kind or k3d cluster",
            hint="this case needs a local image in the nodes; run it on a floxk up cluster",
        )


def current_context(kubeconfig: Path) -> str:
    import yaml

    data = yaml.safe_load(Path(kubeconfig).read_text()) or {}
    ctx = data.get("current-context")
    if not ctx:
        raise ConfigError(f"{kubeconfig} has no current context", hint="kubectl config use-context")
    return ctx


def make_manager(
    provider: str,
    *,
    name: str,
    kubeconfig: Path | None = None,
    workers: int = 1,
    base_image: str | None = None,
    timeout: int = 600,
    progress: Progress | None = None,
) -> AClusterManager:
    """A manager whose create() makes (or, for existing, checks) the cluster."""
    if provider == "existing":
        source = kubeconfig or _default_kubeconfig()
        copy = private_kubeconfig(source)
        manager = FloxkExistingManager(None, None, copy)
        manager.context = current_context(copy)
        return manager
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}", hint=f"use one of {PROVIDERS}")
    cls = {"kind": FloxkKindManager, "k3d": FloxkK3dManager}[provider]
    manager = cls(name, None, private_kubeconfig())
    manager.workers, manager.base_image = workers, base_image
    manager.timeout, manager.progress = timeout, progress
    manager.context = context_name(provider, name)
    manager._cluster_options.cluster_timeout = timeout
    return manager


def _default_kubeconfig() -> Path:
    import os

    first = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0]
    path = Path(first) if first else Path.home() / ".kube" / "config"
    if not path.is_file():
        raise NotFoundError(
            f"no kubeconfig at {path}", hint="pass --kubeconfig FILE or set KUBECONFIG"
        )
    return path
