"""The suite's environments, each built from e2e/catalog with Nix and pushed with
`floxk env push` on first use (session fixtures: `-k` builds only what the chosen cases
need). Names carry no run id: a push adds a generation. Environments whose digest must be
new to the cluster (realization counts, gc) add the run id as a variable."""

from __future__ import annotations

import pytest

from e2e import kit
from shim.core.errors import FloxkError

BASIC = kit.manifest(
    {"hello": "hello", "busybox": "busybox"},
    vars={"GREETING": "hi from the environment"},
    hook='export HOOKED="the hook ran"',
)
WEB = kit.manifest({"web": "web", "busybox": "busybox"}, vars={"PORT": "8080"})


def fresh(cluster: kit.Cluster, install: dict[str, str]) -> str:
    """A manifest whose digest no earlier run made (the run id is one of its vars)."""
    return kit.manifest(install, vars={"E2E_RUN": cluster.run_id})


@pytest.fixture(scope="session")
def basic_env(publish) -> kit.Published:
    """hello + busybox, a var and an on-activate hook."""
    return publish("e2e/basic", BASIC)


@pytest.fixture(scope="session")
def web_env(publish) -> kit.Published:
    return publish("e2e/web", WEB)


@pytest.fixture(scope="session")
def toolbox(cluster) -> str:
    """A plain (non-flox) image with a shell, in every node; skips where none can be loaded."""
    try:
        return cluster.toolbox_image()
    except FloxkError as e:
        pytest.skip(f"needs a local image in the nodes: {e.message}")
