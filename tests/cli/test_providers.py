"""The provider registry and protocol (floxk/_cluster/provider.py): one list of names, every
provider reached through get(), the k3d refusal in one place. No cluster is made here:
tests/k8s/test_kind_e2e.py drives the kind provider for real."""

from __future__ import annotations

import pytest

from floxk import _e2e
from floxk._cluster import k3d, kind
from floxk._cluster import provider as providers
from floxk._cluster.spec import ClusterSpec, parse_context
from shim.core.errors import ConfigError, FloxkError


def test_every_name_has_its_provider_and_nothing_else_is_one():
    assert providers.NAMES == ("kind", "k3d")
    for name in providers.NAMES:
        p = providers.get(name)
        assert p.name == name and providers.Provider in type(p).__mro__
    assert isinstance(providers.get("kind"), kind.Kind)
    assert isinstance(providers.get("k3d"), k3d.K3d)
    with pytest.raises(ConfigError) as e:
        providers.get("minikube")
    assert "unknown provider 'minikube'" in e.value.message and "kind, k3d" in e.value.hint


def test_the_suite_and_the_spec_use_the_same_names():
    assert _e2e.PROVIDERS == (*providers.NAMES, "existing")
    with pytest.raises(ConfigError, match="unknown provider"):
        ClusterSpec(provider="minikube", name="dev")
    assert parse_context("k3d-dev") == ("k3d", "dev") and parse_context("gke-x") is None


def test_k3d_refuses_to_create_before_and_at_create(tmp_path):
    providers.get("kind").check_create()  # kind may
    with pytest.raises(FloxkError) as e:
        providers.get("k3d").check_create()
    assert "k3d clusters are not created by this floxk yet" in e.value.message
    assert "docs/clusters.md" in (e.value.hint or "")
    with pytest.raises(FloxkError, match="not created by this floxk"):
        providers.get("k3d").create(ClusterSpec(provider="k3d", name="dev"), tmp_path,
                                    wait_seconds=None)  # fmt: skip
    assert list(tmp_path.iterdir()) == [], "a refused create writes nothing"


def test_node_count_is_what_the_config_makes():
    spec = ClusterSpec(provider="kind", name="dev", workers=2)
    assert providers.get("kind").node_count(spec) == len(kind.render_config(spec)["nodes"]) == 3
    assert providers.get("k3d").node_count(ClusterSpec(provider="k3d", name="d", workers=2)) == 3
