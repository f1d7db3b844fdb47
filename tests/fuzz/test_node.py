"""node.toml: every key with values of every TOML type, unknown keys, any bytes; the result is
the documented NodeConfig or a ConfigError naming the file and the key.

load_node_config keeps a parsed copy under CACHE_DIR; here that is a temp dir of the test.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shim.core import node
from shim.core.errors import ConfigError
from tests.fuzz import strategies as S

SOURCE = "fuzz/etc/floxk/node.toml"
TOP = ["hubs", "substituters", "trusted_public_keys", "state_dir", "store_root", "runc",
       "runc_v2_shim", "log_file", "policy"]  # fmt: skip
POLICY = ["allowed_owners", "allow_nix_mutable"]
GOOD = {
    "hubs": ["file:///srv/hub"],
    "substituters": ["file:///srv/hub", "https://cache.example"],
    "trusted_public_keys": ["cache-1:AAAA"],
    "state_dir": "/var/lib/floxk",
    "store_root": "/srv/store",
    "runc": "/usr/sbin/runc",
    "runc_v2_shim": "/usr/bin/containerd-shim-runc-v2",
    "log_file": "/var/log/floxk.log",
    "policy": {"allowed_owners": ["alice"], "allow_nix_mutable": False},
}


def check_config(cfg: node.NodeConfig) -> None:
    for urls in (cfg.hubs, cfg.substituters):
        assert all(isinstance(u, str) and "://" in u for u in urls)
    assert all(isinstance(k, str) and k for k in cfg.trusted_public_keys)
    for path in (cfg.state_dir, cfg.store_root, cfg.runc, cfg.runc_v2_shim, cfg.log_file):
        assert path is None or (isinstance(path, str) and path.startswith("/"))
    assert all(isinstance(o, str) and o for o in cfg.policy.allowed_owners)
    assert isinstance(cfg.policy.allow_nix_mutable, bool)
    cfg.store_dir, cfg.log_path  # noqa: B018 - derived paths compute


def parse_or_error(text: str, path: list | None = None) -> None:
    try:
        cfg = node.parse_node_config(text, source=SOURCE)
    except ConfigError as e:
        assert str(e).startswith(f"{SOURCE}:"), e
        if path:
            keys = [p for p in path if isinstance(p, str)]
            assert any(k in str(e) for k in keys) or not keys, (path, str(e))
        return
    check_config(cfg)


@given(S.mutated(GOOD, S.TOML, TOP + POLICY))
def test_node_toml_mutated(case):
    doc, path = case
    if isinstance(doc, dict):
        parse_or_error(S.to_toml(doc), path)


@given(S.text_edits(S.to_toml(GOOD), "[]{}=\"'.,#\n \\a/:0"))
def test_node_toml_text_edits(text):
    parse_or_error(text)


@example(b"hubs = []\n\xff")
@example(b'hubs = ["file:///\xc3"]\n')
@given(st.one_of(st.binary(max_size=200), S.text_edits(S.to_toml(GOOD), "\xff").map(str.encode)))
def test_node_toml_file_bytes(monkeypatch_cache, raw):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "node.toml")
        with open(path, "wb") as f:
            f.write(raw)
        try:
            cfg = node.load_node_config(path)
        except ConfigError as e:
            assert path in str(e), e
            return
        check_config(cfg)


@pytest.fixture(scope="module")
def monkeypatch_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(node, "CACHE_DIR", str(tmp_path_factory.mktemp("node-config-cache")))
    yield
    mp.undo()


def test_found_non_utf8_node_toml_is_a_config_error(tmp_path, monkeypatch):
    """A UnicodeDecodeError came out of load_node_config for a file that is not UTF-8."""
    monkeypatch.setattr(node, "CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "node.toml"
    path.write_bytes(b'hubs = ["file:///srv/hub"]\n# caf\xe9\n')
    with pytest.raises(ConfigError, match=rf"{path}: not UTF-8"):
        node.load_node_config(path)


def test_found_deeply_nested_node_toml_is_a_config_error():
    with pytest.raises(ConfigError, match=rf"{SOURCE}: not valid TOML"):
        node.parse_node_config("x = " + "[" * 5000 + "]" * 5000, source=SOURCE)


@example(b"\xff")
@example(b'{"stamp": {}, "data": []}')
@example(b"[" * 5000)  # found: RecursionError came out of load_node_config
@given(st.one_of(st.binary(max_size=100), S.JSON.map(lambda v: json.dumps(v).encode())))
def test_parsed_config_cache_of_any_content(raw):
    """Whatever a cache file holds (torn, foreign, hand-edited), load_node_config reads
    node.toml as without it: the cache is only used when its stamp is this file's."""
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        mp.setattr(node, "CACHE_DIR", os.path.join(d, "cache"))
        path = os.path.join(d, "node.toml")
        with open(path, "w") as f:
            f.write(S.to_toml(GOOD))
        with open(path, "rb") as f:
            stamp = node._stamp(path, os.fstat(f.fileno()))
        os.makedirs(node.CACHE_DIR, mode=0o700)
        cache = node._cache_file(stamp)
        with open(cache, "wb") as f:
            f.write(raw)
        os.chmod(cache, 0o600)
        assert node.load_node_config(path) == node.parse_node_config(S.to_toml(GOOD), source=path)
