"""`floxk status -v`'s node side: `floxk-node stats` run inside a real node container built
from this checkout's node image recipe (the stand-in base of test_cluster_nodeimage.py).
Skipped with a reason where Docker or mmdebstrap is missing."""

from __future__ import annotations

import uuid

import pytest

from floxk._cluster import nodecheck, nodeimage
from floxk.cli.cluster import _say_node_stats
from tests.cli.test_cluster_nodeimage import docker_client, standin_base  # noqa: F401


@pytest.fixture
def node_container(docker_client, standin_base):  # noqa: F811 - the fixtures' names
    image = nodeimage.build_node_image(standin_base, client=docker_client)
    c = docker_client.containers.run(
        image.tag, ["sleep", "300"], entrypoint="", detach=True,
        name=f"floxk-nodes-stats-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    yield c
    c.remove(force=True)


def test_node_stats_through_docker_exec(docker_client, node_container, capsys):  # noqa: F811
    stats = nodecheck.node_stats(docker_client, node_container.name)
    assert "error" not in stats, stats
    assert stats["environments"] == [] and stats["state_dir"] == nodeimage.STATE_DIR
    assert stats["realize_timeout"] == 300 and stats["gc_policy"]["high_percent"] == 85
    assert 0 < stats["filesystem"]["used_percent"] <= 100
    _say_node_stats(node_container.name, stats)
    out = capsys.readouterr().out
    assert f"{node_container.name}:" in out and "environments: 0 (0 in use)" in out
    assert "last GC: never" in out


def test_a_node_without_the_app_says_so(docker_client, node_container):  # noqa: F811
    node_container.exec_run(["rm", nodecheck.NODE_APP])
    stats = nodecheck.node_stats(docker_client, node_container.name)
    assert "error" in stats and "floxk-node" in stats["error"]
