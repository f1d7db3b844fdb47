"""shim/core/containerd.py: the flox runtime table per containerd line, TOML output, oom probe."""

from __future__ import annotations

import os
import tomllib

import pytest

from shim.core import containerd as ctrd
from shim.core.errors import ConfigError

SHIM = "/usr/local/bin/containerd-shim-flox-v2"
RUNC = "/usr/local/bin/floxk-runc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.1.9", (2, 1, 9)),
        ("v1.7.24", (1, 7, 24)),
        ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", (1, 6, 20)),
        ("containerd github.com/containerd/containerd/v2 2.1.9+unknown ", (2, 1, 9)),
    ],
)
def test_parse_version(text, expected):
    assert ctrd.parse_version(text) == expected


def test_parse_version_rejects_garbage():
    with pytest.raises(ConfigError, match="cannot read a containerd version"):
        ctrd.parse_version("containerd dev build")


@pytest.mark.parametrize(
    ("version", "config_version", "plugin"),
    [
        ("1.6.20", 2, "io.containerd.grpc.v1.cri"),
        ("1.7.24", 2, "io.containerd.grpc.v1.cri"),
        ("2.1.9", 3, "io.containerd.cri.v1.runtime"),
        ("2.2.0", 3, "io.containerd.cri.v1.runtime"),
        ("2.3.7", 3, "io.containerd.cri.v1.runtime"),  # 2.3+ reads 3 (and migrates it)
        ("2.4.2", 3, "io.containerd.cri.v1.runtime"),
    ],
)
def test_rendered_table_sits_under_the_plugin_this_line_reads(version, config_version, plugin):
    text = ctrd.render_flox_runtime(version, shim_path=SHIM, runc_path=RUNC)
    config = tomllib.loads(text)
    assert config["version"] == config_version
    assert list(config["plugins"]) == [plugin]
    flox = config["plugins"][plugin]["containerd"]["runtimes"]["flox"]
    assert flox == {
        "runtime_type": "io.containerd.runc.v2",
        "runtime_path": SHIM,
        "pod_annotations": ["flox.dev/*"],
        "options": {"BinaryName": RUNC, "SystemdCgroup": False},
    }
    assert "restrict_oom_score_adj" not in config["plugins"][plugin]


@pytest.mark.parametrize(
    ("version", "default", "readable", "dropins"),
    [
        ("1.6.20", 2, (2,), False),
        ("1.7.24", 2, (2,), False),
        ("2.0.0", 3, (2, 3), False),
        ("2.1.9", 3, (2, 3), False),
        ("2.2.9", 3, (2, 3), True),
        ("2.3.7", 4, (2, 3, 4), True),
        ("2.4.2", 4, (2, 3, 4), True),
    ],
)
def test_config_versions_per_line(version, default, readable, dropins):
    """What each line's `config default` writes, which file versions it loads, whether its
    default imports conf.d (checked against the real binaries in tests/install)."""
    assert ctrd.default_config_version(version) == default
    assert ctrd.readable_config_versions(version) == readable
    assert ctrd.imports_dropins(version) is dropins
    assert ctrd.config_version(version) == min(default, 3)


def test_version_4_keeps_the_2x_cri_id():
    assert ctrd.CRI_RUNTIME_PLUGIN[4] == ctrd.CRI_RUNTIME_PLUGIN[3] != ctrd.CRI_RUNTIME_PLUGIN[2]


def test_runc_root_only_when_given():
    table = ctrd.flox_runtime_table(shim_path=SHIM, runc_path=RUNC, runc_root="/run/x/runc")
    assert table["options"] == {"BinaryName": RUNC, "SystemdCgroup": False, "Root": "/run/x/runc"}
    assert "Root" not in ctrd.flox_runtime_table(shim_path=SHIM, runc_path=RUNC)["options"]


def test_restrict_oom_score_adj_only_when_asked():
    config = ctrd.flox_runtime_config(
        "2.1.9", shim_path=SHIM, runc_path=RUNC, systemd_cgroup=True, restrict_oom_score_adj=True
    )
    plugin = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert plugin["restrict_oom_score_adj"] is True
    assert plugin["containerd"]["runtimes"]["flox"]["options"]["SystemdCgroup"] is True


def test_unknown_major_and_relative_paths_are_config_errors():
    with pytest.raises(ConfigError, match="not a line floxk knows"):
        ctrd.config_version("3.0.0")
    with pytest.raises(ConfigError, match="not a line floxk knows"):
        ctrd.default_config_version("3.0.0")
    with pytest.raises(ConfigError, match="absolute path"):
        ctrd.flox_runtime_table(shim_path="containerd-shim-flox-v2", runc_path=RUNC)


@pytest.mark.parametrize(
    ("version", "starts"), [("1.6.20", "none"), ("1.7.24", "all"), ("2.1.9", "sandbox")]
)
def test_wrapper_shim_starts_per_line(version, starts):
    assert ctrd.wrapper_shim_starts(version) == starts


def test_to_toml_round_trips_through_tomllib():
    data = {
        "version": 3,
        "root": "/var/lib/x y",
        "plugins": {
            "io.containerd.cri.v1.images": {"pinned_images": {"sandbox": 'a"b\\c'}},
            "io.containerd.cri.v1.runtime": {"flag": False, "list": ["a", "b"], "n": 1.5},
        },
        "empty": {},
    }
    assert tomllib.loads(ctrd.to_toml(data)) == data


def test_to_toml_rejects_what_it_cannot_write():
    with pytest.raises(ConfigError):
        ctrd.to_toml({"x": None})


def test_merge_is_deep_and_leaves_inputs_alone():
    base = {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}
    merged = ctrd.merge(base, {"a": {"c": {"f": 3}}, "e": [2]})
    assert merged == {"a": {"b": 1, "c": {"d": 2, "f": 3}}, "e": [2]}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}


def test_oom_probe_agrees_with_capabilities():
    """The fork probe and CapEff must tell the same story (root here; a lower target than
    our own score needs CAP_SYS_RESOURCE), and the probe must leave our own score alone."""
    with open("/proc/self/oom_score_adj") as f:
        before = f.read()
    can = ctrd.can_lower_oom_score_adj(-1000)
    with open("/proc/self/oom_score_adj") as f:
        assert f.read() == before
    if os.geteuid() == 0 and int(before) > -1000:
        assert can == ctrd.has_cap_sys_resource()
    assert ctrd.can_lower_oom_score_adj(int(before))  # staying put is always allowed
