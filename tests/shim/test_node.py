"""node.toml: defaults when missing, ConfigError naming key and file when wrong."""

from __future__ import annotations

import os

import pytest

from shim.core.errors import ConfigError
from shim.core.node import NodeConfig, find_program, load_node_config, parse_node_config
from shim.front import render_front


def test_missing_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOXK_NODE_CONFIG", str(tmp_path / "absent.toml"))
    cfg = load_node_config()
    assert cfg.hubs == [] and cfg.substituters == []
    assert cfg.state_dir == "/var/lib/floxk"
    assert cfg.store_root is None and cfg.store_dir == "/nix/store"
    assert cfg.policy.allowed_owners == [] and cfg.policy.allow_nix_mutable is False
    assert cfg.log_path == "/var/lib/floxk/floxk.log"


def test_env_var_selects_file_and_substituters_default_to_hubs(tmp_path, monkeypatch):
    f = tmp_path / "node.toml"
    f.write_text(
        'hubs = ["file:///srv/hub", "https://hub.example"]\n'
        'trusted_public_keys = ["cache-1:abc="]\n'
        'state_dir = "/tmp/floxk-state"\nstore_root = "/tmp/floxk-store"\n'
        'runc = "/usr/sbin/runc"\nlog_file = "/tmp/floxk.log"\n'
        '[policy]\nallowed_owners = ["flox"]\nallow_nix_mutable = true\n'
    )
    monkeypatch.setenv("FLOXK_NODE_CONFIG", str(f))
    cfg = load_node_config()
    assert cfg.substituters == cfg.hubs == ["file:///srv/hub", "https://hub.example"]
    assert cfg.store_dir == "/tmp/floxk-store/nix/store"
    assert cfg.find_runc() == "/usr/sbin/runc"
    assert cfg.policy.allowed_owners == ["flox"] and cfg.policy.allow_nix_mutable
    assert cfg.source == str(f)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('hubs = "file:///x"', "hubs"),
        ('hubs = ["/srv/hub"]', "hubs"),
        ("state_dir = 'relative/dir'", "state_dir"),
        ("store_root = 3", "store_root"),
        ("[policy]\nallow_nix_mutable = 'yes'", "policy.allow_nix_mutable"),
        ("[policy]\nallowed_owners = [1]", "policy.allowed_owners"),
        ("[policy]\nallow_everything = true", "policy.allow_everything"),
        ("substituter = ['file:///x']", "substituter"),
        ("hubs = [", "TOML"),
    ],
)
def test_invalid_names_key_and_file(text, key):
    with pytest.raises(ConfigError) as e:
        parse_node_config(text, source="/etc/floxk/node.toml")
    assert key in e.value.message and "/etc/floxk/node.toml" in e.value.message


def test_find_runc_skips_a_floxk_front_named_runc(tmp_path, monkeypatch):
    real = find_program("runc")
    assert real is not None, "runc must be installed (scripts/install-system.sh)"
    front_dir = tmp_path / "front"
    front_dir.mkdir()
    front = front_dir / "runc"
    front.write_text(render_front(os.path.realpath(real)))
    front.chmod(0o755)
    monkeypatch.setenv("PATH", f"{front_dir}:{os.environ['PATH']}")
    assert NodeConfig().find_runc() != str(front)
    assert os.path.realpath(NodeConfig().find_runc()) == os.path.realpath(real)


def test_parsed_node_toml_is_cached_and_any_change_misses(tmp_path, monkeypatch):
    from shim.core import node as node_mod

    monkeypatch.setattr(node_mod, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(node_mod, "_FRESH_NS", 0)  # the file below is seconds old at most
    f = tmp_path / "node.toml"
    f.write_text('hubs = ["file:///a"]\nstate_dir = "/srv/a"\n')
    first = load_node_config(f)
    [entry] = (tmp_path / "cache").iterdir()
    assert oct(entry.stat().st_mode & 0o777) == "0o600"
    # a cache hit must not even look at the TOML: prove it with a doctored entry
    doctored = entry.read_text().replace("/srv/a", "/srv/from-cache")
    entry.write_text(doctored)
    assert load_node_config(f).state_dir == "/srv/from-cache"
    f.write_text('hubs = ["file:///a"]\nstate_dir = "/srv/b"\n')  # same size, new stamp
    assert load_node_config(f).state_dir == "/srv/b" != first.state_dir
    f.write_text('hubs = ["file:///a"]\nstate_dirr = "/srv/b"\n')
    with pytest.raises(ConfigError, match="unknown key state_dirr"):
        load_node_config(f)
    with pytest.raises(ConfigError, match="unknown key state_dirr"):
        load_node_config(f)  # from the cache: the same checks, the same error


def test_a_fresh_node_toml_is_not_cached(tmp_path, monkeypatch):
    from shim.core import node as node_mod

    monkeypatch.setattr(node_mod, "CACHE_DIR", tmp_path / "cache")
    f = tmp_path / "node.toml"
    f.write_text('hubs = ["file:///a"]\n')
    assert load_node_config(f).hubs == ["file:///a"]
    assert not (tmp_path / "cache").exists()


def test_realize_timeout_and_gc_defaults_and_spellings():
    default = parse_node_config("")
    assert default.realize_timeout == 300
    assert (default.gc.auto, default.gc.high_percent, default.gc.low_percent) == (True, 85, 80)
    cfg = parse_node_config(
        'realize_timeout = "2m"\n[gc]\nauto = false\nhigh_percent = 90\nlow_percent = 60.5\n'
        'min_unused_age = "1h"\ninterval = 30\n'
    )
    assert cfg.realize_timeout == 120
    assert (cfg.gc.auto, cfg.gc.high_percent, cfg.gc.low_percent) == (False, 90, 60.5)
    assert (cfg.gc.min_unused_age, cfg.gc.interval) == (3600, 30)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("realize_timeout = 0", "realize_timeout"),
        ('realize_timeout = "soon"', "realize_timeout"),
        ("realize_timeout = true", "realize_timeout"),
        ("[gc]\nhigh_percent = 0", "gc.high_percent"),
        ("[gc]\nlow_percent = 120", "gc.low_percent"),
        ("[gc]\nhigh_percent = 70\nlow_percent = 80", "gc.low_percent"),
        ('[gc]\nmin_unused_age = "-1s"', "gc.min_unused_age"),
        ("[gc]\nthreshold = 80", "gc.threshold"),
        ("gc = 1", "gc"),
    ],
)
def test_bad_deadline_or_gc_names_the_key(text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_node_config(text)
