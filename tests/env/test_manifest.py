"""manifest.toml: what floxk reads, and that every rejection names the key and its line."""

from __future__ import annotations

import re

import pytest

from shim.core.errors import ManifestError
from shim.core.model import current_system, key_lines, load_manifest, parse_manifest

STORE_PATH = "/nix/store/nn87081h4ny2xkqnp3f48j8nqvb3wrj5-comfyui-scripts-0.9.0"


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing needle: the expectation comes from the text."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def error_of(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text)
    return info.value


def test_descriptors_of_each_kind():
    m = parse_manifest(
        f"""
version = 1
[install]
hello.pkg-path = "hello"
node = {{ pkg-path = "nodejs_20", version = "^20.1", systems = ["x86_64-linux"], priority = 3 }}
pg = {{ pkg-path = "postgresql", outputs = "all", pkg-group = "db" }}
tool.flake = "github:owner/repo#tool"
tool.outputs = ["out", "man"]
[install.scripts]
store-path = "{STORE_PATH}"
"""
    )
    assert {i: d.kind for i, d in m.install.items()} == {
        "hello": "catalog",
        "node": "catalog",
        "pg": "catalog",
        "tool": "flake",
        "scripts": "store-path",
    }
    assert m.install["hello"].priority == 5 and m.install["hello"].pkg_path == "hello"
    node = m.install["node"]
    assert (node.version, node.systems, node.priority) == ("^20.1", ["x86_64-linux"], 3)
    assert (m.install["pg"].outputs, m.install["pg"].pkg_group) == ("all", "db")
    assert (m.install["tool"].flake, m.install["tool"].outputs) == (
        "github:owner/repo#tool",
        ["out", "man"],
    )
    assert m.install["scripts"].store_path == STORE_PATH
    assert m.warnings == []


def test_vars_hook_profile_options():
    m = parse_manifest(
        """
schema-version = "1.10.0"
[vars]
GREETING = "Howdy"
EMPTY = ""
[hook]
on-activate = '''
  export X=1
'''
[profile]
common = "echo common"
bash = "echo bash"
[options]
systems = ["x86_64-linux", "aarch64-linux"]
activate.mode = "dev"
allow.unfree = true
"""
    )
    assert m.version == "1.10.0"
    assert m.vars == {"GREETING": "Howdy", "EMPTY": ""}
    assert m.hook_on_activate == "  export X=1\n"
    assert m.profile == {"common": "echo common", "bash": "echo bash"}
    assert m.systems == ["x86_64-linux", "aarch64-linux"]
    assert m.activate_mode == "dev"
    assert m.options["allow"] == {"unfree": True}  # kept for the resolver, not dropped


def test_no_version_is_a_pre_1_manifest_with_a_warning():
    m = parse_manifest('[install]\nhello.pkg-path = "hello"\n')
    assert m.version == 0
    assert any("version" in w for w in m.warnings)


@pytest.mark.parametrize(
    "text, key",
    [
        ("version = 2\n", "version"),
        ('schema-version = "2.0.0"\n', "schema-version"),
        ('version = 1\nschema-version = "1.10.0"\n', "schema-version"),
    ],
)
def test_unsupported_versions_are_rejected(text, key):
    assert f"'{key}'" in error_of(text).message


@pytest.mark.parametrize(
    "text, bad",
    [
        ('version = 1\n[install]\nhello.pkg-path = "hello"\nbroken = \n', "broken ="),
        ('version = 1\n[vars]\nA = "1"\nA = "2"\n', 'A = "2"'),
        ('version = 1\n[install]\nx = { pkg-path = "x", version = }\n', "version = }"),
        ('version = 1\n\n\n[vars\nA = "1"\n', "[vars"),
    ],
)
def test_malformed_toml_names_the_line(text, bad):
    e = error_of(text)
    assert f"line {line_of(text, bad)}," in e.message
    assert "invalid TOML" in e.message


def test_malformed_toml_names_the_key_when_it_can():
    e = error_of('version = 1\n[vars]\nA = "1"\nA = "2"\n')
    assert "'vars.A'" in e.message


@pytest.mark.parametrize(
    "text",
    [
        'version = 1\n[install]\nhello.pkg-path = "hello"\nhello.colour = "red"\n',
        'version = 1\n\n[install]\nhello = { pkg-path = "hello", colour = "red" }\n',
        'version = 1\n[install.hello]\npkg-path = "hello"\n\ncolour = "red"\n',
    ],
    ids=["dotted", "inline", "table"],
)
def test_unknown_descriptor_key_names_key_and_line(text):
    e = error_of(text)
    assert "'install.hello.colour'" in e.message
    assert f"line {line_of(text, 'colour')}:" in e.message


def test_unknown_descriptor_key_after_a_multiline_string():
    text = 'version = 1\n[hook]\non-activate = """\n  colour = 1\n"""\n[install]\nx.pkg-path = "x"\nx.colour = 1\n'
    e = error_of(text)
    assert f"line {line_of(text, 'x.colour')}:" in e.message


def test_unknown_top_level_key_names_key_and_line():
    text = 'version = 1\n\n[instal]\nhello.pkg-path = "hello"\n'
    e = error_of(text)
    assert "'instal'" in e.message and "line 3:" in e.message


@pytest.mark.parametrize("value", ["8080", "true", "['a']", "{ a = 'b' }"])
def test_vars_must_be_strings(value):
    text = f'version = 1\n[vars]\nOK = "yes"\nPORT = {value}\n'
    e = error_of(text)
    assert "'vars.PORT'" in e.message and "line 4:" in e.message
    assert "string" in e.message


@pytest.mark.parametrize(
    "descriptor, key",
    [
        ('{ pkg-path = "x", flake = "y" }', "install.x"),
        ("{ version = '1' }", "install.x"),
        ('{ pkg-path = "x", priority = "high" }', "install.x.priority"),
        ('{ pkg-path = "x", systems = "x86_64-linux" }', "install.x.systems"),
        ('{ pkg-path = "x", outputs = "some" }', "install.x.outputs"),
        ('{ store-path = "/etc/passwd" }', "install.x.store-path"),
        ('"x"', "install.x"),
    ],
)
def test_bad_descriptors_are_rejected(descriptor, key):
    text = f"version = 1\n[install]\nx = {descriptor}\n"
    e = error_of(text)
    assert f"'{key}'" in e.message and "line 3:" in e.message


def test_activate_mode_must_be_run_or_dev():
    e = error_of('version = 1\n[options]\nactivate.mode = "prod"\n')
    assert "'options.activate.mode'" in e.message and "line 3:" in e.message


def test_include_and_services_warn_naming_the_key():
    text = """version = 1
[install]
hello.pkg-path = "hello"

[services.web]
command = "python -m http.server"

[include]
environments = [{ dir = "../base" }]
"""
    m = parse_manifest(text)
    services = [w for w in m.warnings if "'services'" in w]
    include = [w for w in m.warnings if "'include'" in w]
    assert len(services) == 1 and f"line {line_of(text, '[services')}" in services[0]
    assert len(include) == 1 and f"line {line_of(text, '[include]')}" in include[0]
    assert "not honoured" in services[0] and "not honoured" in include[0]
    assert m.services == {"web": {"command": "python -m http.server"}}
    assert m.includes == [{"dir": "../base"}]


def test_empty_sections_from_flox_templates_do_not_warn():
    m = parse_manifest("version = 1\n[install]\n[services]\n[include]\n[build]\n")
    assert m.warnings == []


def test_build_is_read_and_warned():
    m = parse_manifest('version = 1\n[build.app]\ncommand = "make"\n')
    assert any("'build'" in w for w in m.warnings)


def test_key_lines_common_forms():
    text = """version = 1
[install]
a.pkg-path = "a"
b = { pkg-path = "b", priority = 1 }
[install.c]
pkg-path = "c"
[hook]
on-activate = '''
  d = 1
'''
[options]
"activate".mode = "run"
"""
    lines = key_lines(text)
    assert lines[("version",)] == 1
    assert lines[("install", "a", "pkg-path")] == 3
    assert lines[("install", "b", "priority")] == 4
    assert lines[("install", "c")] == 5 and lines[("install", "c", "pkg-path")] == 6
    assert ("hook", "d") not in lines and ("d",) not in lines
    assert lines[("options", "activate", "mode")] == 12


def test_load_manifest_reports_a_missing_file(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "manifest.toml")
    assert "does not exist" in info.value.message and info.value.hint


def test_current_system_is_a_nix_system():
    assert re.fullmatch(r"(x86_64|aarch64|[a-z0-9_]+)-(linux|darwin|[a-z]+)", current_system())
