"""node.toml's [[credentials]] and the pieces of shim.core.auth that need no server (the token's
way through Nix and nginx is tested in tests/env/test_private_hub.py)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

from shim.core import auth
from shim.core.errors import ConfigError
from shim.core.node import Credential, NodeConfig, parse_node_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_credentials_are_parsed():
    cfg = parse_node_config(
        'hubs = ["https://hub.example.org/cache"]\ntoken_cache_ttl = "10s"\n'
        '[[credentials]]\nurl = "https://hub.example.org/cache"\nauth = "pod-token"\n'
        '[[credentials]]\nurl = "http://cache.example.org"\nauth = "node-token"\n'
        'token_file = "/etc/floxk/cache.token"\n'
    )
    assert cfg.credentials == [
        Credential("https://hub.example.org/cache", "pod-token"),
        Credential("http://cache.example.org", "node-token", "/etc/floxk/cache.token"),
    ]
    assert cfg.token_cache_ttl == 10.0


@pytest.mark.parametrize(
    "body, says",
    [
        ('url = "file:///srv"\nauth = "pod-token"', "credentials[0].url must be an http"),
        ('url = "https://h"\nauth = "password"', 'credentials[0].auth must be "pod-token"'),
        ('url = "https://h"\nauth = "node-token"', "token_file goes with"),
        ('url = "https://h"\nauth = "pod-token"\ntoken_file = "/t"', "token_file goes with"),
        ('url = "https://h"\nauth = "node-token"\ntoken_file = "t"', "must be an absolute path"),
        ('url = "https://h"\nauth = "pod-token"\ntoken = "x"', "unknown key credentials[0].token"),
    ],
)
def test_bad_credentials_name_the_key(body, says):
    with pytest.raises(ConfigError) as e:
        parse_node_config(f"[[credentials]]\n{body}\n")
    assert says in str(e.value)


def test_one_host_cannot_take_two_tokens():
    with pytest.raises(ConfigError, match="credentials for h.example differ"):
        parse_node_config(
            '[[credentials]]\nurl = "https://h.example/a"\nauth = "pod-token"\n'
            '[[credentials]]\nurl = "https://h.example:8443/b"\nauth = "node-token"\n'
            'token_file = "/t"\n'
        )


def test_urls_and_hosts():
    assert auth.covers("https://h/cache/", "https://h/cache/floxk/envs/a/b/latest")
    assert auth.covers("https://h/cache", "https://h/cache")
    assert not auth.covers("https://h/cache", "https://h/cache2/x")
    assert auth.url_host("https://user@Hub.Example:8443/x?y") == "hub.example"
    assert auth.url_host("http://[::1]:80/") == "[::1]"


def test_a_token_never_shows_itself():
    token = auth.Token("s3cr3t")
    assert "s3cr3t" not in repr(token) and "s3cr3t" not in str(token)
    assert "s3cr3t" not in repr([token]) and "s3cr3t" not in f"{token}"


def test_the_netrc_file_is_private_and_removed(tmp_path):
    cfg = NodeConfig(
        state_dir=str(tmp_path),
        credentials=[Credential("https://h.example/cache", "node-token", str(tmp_path / "t"))],
    )
    (tmp_path / "t").write_text("tok-1\n")
    (tmp_path / "t").chmod(0o600)
    access = auth.access_for(cfg, None)
    with auth.netrc_options(access, ["https://h.example/cache", "file:///x"]) as options:
        assert options[:2] == ["--option", "netrc-file"] and "tok-1" not in " ".join(options)
        path = options[2]
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path) as f:
            assert f.read() == "machine h.example login floxk password tok-1\n"
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    with auth.netrc_options(access, ["file:///x"]) as options:
        assert options == []


_HOLD_NETRC = """
import sys, time
from shim.core import auth
from shim.core.node import Credential, NodeConfig
cfg = NodeConfig(state_dir=sys.argv[1],
                 credentials=[Credential("https://h.example/c", "node-token", sys.argv[2])])
with auth.netrc_options(auth.access_for(cfg, None), ["https://h.example/c"]) as options:
    print(options[2], flush=True)
    time.sleep(600)
"""


def _holding_netrc(tmp_path) -> tuple[subprocess.Popen, str]:
    """A process inside netrc_options (as a realization's Nix call is); its netrc path."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_NETRC, str(tmp_path), str(tmp_path / "t")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO},
    )  # fmt: skip
    return proc, proc.stdout.readline().strip()


def test_netrc_dirs_of_killed_processes_are_swept(tmp_path):
    """floxk-runc SIGKILLed (containerd giving up on a create) never leaves the block: the
    next netrc_options removes that directory, and keeps a live process's and another
    user's."""
    (tmp_path / "t").write_text("tok-1\n")
    (tmp_path / "t").chmod(0o600)
    killed, killed_path = _holding_netrc(tmp_path)
    live, live_path = _holding_netrc(tmp_path)
    base = os.path.dirname(os.path.dirname(killed_path))
    others = os.path.join(base, f"{auth.NETRC_PREFIX}{killed.pid}.0-other")
    try:
        os.mkdir(others, 0o700)
        if os.geteuid() == 0:
            os.chown(others, 65534, 65534)
        killed.kill()
        killed.wait()
        assert os.path.exists(killed_path)  # what a SIGKILL leaves
        cfg = NodeConfig(state_dir=str(tmp_path), credentials=[
            Credential("https://h.example/c", "node-token", str(tmp_path / "t"))])  # fmt: skip
        with auth.netrc_options(auth.access_for(cfg, None), ["https://h.example/c"]) as options:
            assert os.path.exists(options[2])
        assert not os.path.exists(os.path.dirname(killed_path))
        assert os.path.exists(live_path)
        assert os.path.isdir(others) == (os.geteuid() == 0)  # root could chown it away
    finally:
        live.kill()
        live.wait()
        shutil.rmtree(others, ignore_errors=True)
    assert os.path.dirname(live_path) in auth.sweep_netrc_dirs(base)


def test_a_node_token_file_others_can_read_is_refused(tmp_path):
    (tmp_path / "t").write_text("tok-1\n")
    (tmp_path / "t").chmod(0o640)
    with pytest.raises(ConfigError, match="readable by nobody else"):
        auth.read_token_file(str(tmp_path / "t"))
    (tmp_path / "link").symlink_to(tmp_path / "t")
    with pytest.raises(ConfigError, match="cannot read the token file"):
        auth.read_token_file(str(tmp_path / "link"))
