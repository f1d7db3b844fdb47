"""The str-method grammar checks accept exactly what the regexes they replaced accepted."""

from __future__ import annotations

import random
import re

import pytest

from shim.core import annotations, gc, hub, hubfetch
from shim.core.errors import AnnotationError, FloxkError, RealizeError

# The regexes as they were before shim.core.names (re is fine here: tests are not a create).
_ANN_SEG = r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.))*"
ANN_REF = re.compile(rf"(?P<owner>{_ANN_SEG})/(?P<name>{_ANN_SEG})(?::(?P<gen>[1-9][0-9]{{0,8}}))?")
DNS1123 = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
GC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
GC_DIGEST = re.compile(r"^[0-9a-f]{64}$")

ALPHABET = "aZ09._-/:\n \u00e9\u0663\u00b2A-z"
EDGES = [
    "",
    "a/b",
    "a/b:1",
    "a/b:0",
    "a/b:01",
    "a/b:123456789",
    "a/b:1234567890",
    "a/b:",
    "a/b\n",
    "a/b:7\n",
    "a/b\n\n",
    "\na/b",
    ".a/b",
    "a./b.",
    "a..b/c",
    "a/b..",
    "a/b/c",
    "a:1/b",
    "a/b:1:2",
    "\u00e9/b",
    "a/\u0663",
    "a/b:\u0663",
    "a/b:\u00b2",
    "A" * 100 + "/" + "b" * 100 + ":999999999",
    "A" * 101 + "/b",
    "a/" + "b" * 101,
    "app",
    "-app",
    "app-",
    "a-b-c",
    "App",
    "a" * 63,
    "a" * 64,
    "a_b",
    "0" * 64,
    "0" * 64 + "\n",
    "f" * 63,
    "F" * 64,
    "x" * 128,
    "x" * 129,
    "x" * 128 + "\n",
]


def _samples() -> list[str]:
    rng = random.Random(1123)
    out = list(EDGES)
    for _ in range(4000):
        out.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))))
    for _ in range(500):  # near the length limits
        out.append("a" * rng.randint(95, 105) + "/" + "b" * rng.randint(95, 105))
        out.append("".join(rng.choice("0123456789abcdefg\n") for _ in range(rng.randint(62, 66))))
    return out


SAMPLES = _samples()


def test_env_ref_annotation_grammar_unchanged():
    for value in SAMPLES:
        m = ANN_REF.fullmatch(value) if len(value) <= 211 else None
        if m is not None and (len(m["owner"]) > 100 or len(m["name"]) > 100):
            m = None
        if m is None:
            with pytest.raises(AnnotationError):
                annotations.parse_env_ref(value)
        else:
            got = annotations.parse_env_ref(value)
            gen = int(m["gen"]) if m["gen"] else None
            assert (got.owner, got.name, got.generation) == (m["owner"], m["name"], gen), value


def test_container_name_grammar_unchanged():
    for value in SAMPLES:
        if "," in value or value != value.strip():
            continue
        if DNS1123.fullmatch(value):
            assert annotations.parse_container_names(value, key="k") == frozenset([value])
        elif value:
            with pytest.raises(AnnotationError, match="is not a container name"):
                annotations.parse_container_names(value, key="k")


def test_hub_ref_grammar_is_the_annotation_grammar():
    # The hub once had a looser regex of its own (".." and a trailing newline
    # passed); refs now have one grammar, the annotations'.
    for value in SAMPLES:
        m = ANN_REF.fullmatch(value)
        if m is None:
            with pytest.raises(FloxkError, match="is not an environment reference"):
                hub.parse_ref(value)
        else:
            owner, name, gen = m.group("owner", "name", "gen")
            if len(owner) > 100 or len(name) > 100:
                with pytest.raises(FloxkError):
                    hub.parse_ref(value)
                continue
            assert hub.parse_ref(value) == (owner, name, int(gen) if gen else None), value


def test_gc_id_and_digest_checks_unchanged(tmp_path):
    checks = [
        (gc._check_id, GC_NAME, "invalid container id"),
        (gc._check_digest, GC_DIGEST, "invalid digest"),
    ]
    for value in SAMPLES:
        for check, pattern, message in checks:
            ok = bool(pattern.match(value))
            try:
                check(value)
            except RealizeError as e:
                assert not ok, value
                assert str(e.message) == f"{message}: {value!r}"
            else:
                assert ok, value


@pytest.mark.parametrize(
    "url",
    [
        "file:///srv/hub/floxk/envs/a/b/latest",
        "FILE:///srv/hub/x",
        "file://host/srv/hub/x",
        "file://host",
        "file:/srv/hub/x",
        "file:relative/x",
        "file:///srv/a%20b/x",
        "file:///srv/a?q=1#frag",
        "file:///srv/a#frag?no",
        "file://h?x/y",
        "file://h#x/y",
        " file:///srv/x",
        "file:///srv/\tx",
        "file:///srv/[x]",
        "file:///srv/\u00e9",
        "http://cache.example.org/floxk/envs/a/b/latest",
        "HTTPS://cache.example.org/x",
        "ftp://x/y",
        "1file:///x",
        "/srv/hub/x",
        "",
        ":",
        "file",
    ],
)
def test_hub_url_split_matches_urllib(url):
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    scheme, path = hubfetch._scheme_and_path(url)
    if parts.scheme in ("file", "http", "https"):
        assert (scheme, path) == (parts.scheme, urllib.parse.unquote(parts.path))
    else:
        assert scheme not in ("file", "http", "https")
