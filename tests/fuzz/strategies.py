"""Hypothesis strategies shared by the property tests: the real corpus, TOML and JSON values,
mutations of real documents, a TOML writer for what they produce.

The corpus is tests/env/flox-envs (byte-exact Flox manifests and locks from public
repositories): mutations start from what users really write, so they reach past the first
type check into the keys and nesting the parsers care about.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

CORPUS = Path(__file__).parent.parent / "env" / "flox-envs"
ENV_DIRS = sorted(p for p in CORPUS.iterdir() if (p / "manifest.lock").exists())
MANIFEST_TEXTS = [(d / "manifest.toml").read_text() for d in ENV_DIRS]
LOCK_TEXTS = [(d / "manifest.lock").read_text() for d in ENV_DIRS]
MANIFESTS = [tomllib.loads(t) for t in MANIFEST_TEXTS]
LOCKS = [json.loads(t) for t in LOCK_TEXTS]
LOCKS_V0 = [lock for lock in LOCKS if lock["lockfile-version"] == 0]
LOCKS_V1 = [lock for lock in LOCKS if lock["lockfile-version"] == 1]


def budget(n: int) -> int:
    """max_examples for a costly property (a subprocess per example): n in the default
    profile, as many times more in the fuzz profile as that profile has examples."""
    return max(1, n * settings().max_examples // 60)


# --- values -------------------------------------------------------------------------------

# Strings a parser might choke on: unicode, control characters, quotes, TOML/JSON syntax.
NASTY = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "\t",
        "\x00",
        "\x7f",
        "\u00e9",
        "\u0663",
        "\u2028",
        "\ufeff",
        '"',
        "'",
        "\\",
        "[",
        "]",
        "{",
        "}",
        "=",
        ".",
        "#",
        "..",
        "/",
        ":",
        "a/b",
        "a/b:1",
        "/nix/store/" + "a" * 32 + "-x",
        "/nix/store/" + "e" * 32 + "-x",
        "all",
        "out",
        "run",
        "dev",
        "true",
        "sandbox",
        "x86_64-linux",
        "file:///",
        "http://h",
        "9" * 30,
    ]
)
TEXT = st.one_of(NASTY, st.text(max_size=20))
SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-2, max_value=10),
    st.floats(),
    TEXT,
)
# JSON values (what locks and hub records hold: null included).
JSON = st.recursive(
    st.one_of(st.none(), SCALARS),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
# TOML values (no null; dates and times exist).
TOML_SCALARS = st.one_of(
    SCALARS,
    st.datetimes(),
    st.datetimes(timezones=st.just(datetime.UTC)),
    st.dates(),
    st.times(),
)
TOML = st.recursive(
    TOML_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


# --- mutations of real documents ----------------------------------------------------------


@st.composite
def mutated(draw, doc: Any, values: st.SearchStrategy, keys: list[str] = ()):
    """(a deep copy of `doc` with one mutation, the path it touched).

    Walks a random path into the document, then replaces the value there, deletes it, adds a
    key beside it (a known key or any text) or wraps it in a list.
    """
    doc = copy.deepcopy(doc)
    parent, key, path = None, None, []
    node = doc
    while isinstance(node, dict | list) and node and draw(st.integers(0, 3)) > 0:
        k = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        parent, key, node = node, k, node[k]
        path.append(k)
    op = draw(st.sampled_from(["replace", "delete", "add", "wrap"]))
    if parent is None or (op == "add" and isinstance(node, dict)):
        op = "add" if isinstance(node, dict) else "replace"
    if op == "add" and isinstance(node, dict):
        new = draw(st.one_of(st.sampled_from(list(keys) or ["x"]), TEXT))
        node[new] = draw(values)
        path.append(new)
    elif parent is None:
        doc = draw(values)
    elif op == "delete":
        del parent[key]
    elif op == "wrap":
        parent[key] = [node]
    else:
        parent[key] = draw(values)
    return doc, path


@st.composite
def text_edits(draw, text: str, alphabet: str):
    """`text` with 1-4 edits: a span deleted, characters inserted, a line duplicated."""
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "duplicate"]))
        if op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 30)) :]
        elif op == "insert":
            text = text[:i] + draw(st.text(alphabet, min_size=1, max_size=8)) + text[i:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                j = draw(st.integers(0, len(lines) - 1))
                lines.insert(j, lines[j])
                text = "".join(lines)
    return text


# --- a TOML writer for generated documents --------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else toml_str(key)  # not `$`: it passes "k\n"


def toml_str(s: str) -> str:
    # JSON's escapes are TOML basic-string escapes (not its surrogate pairs: no ASCII-only
    # output); TOML also forbids a raw DEL.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, datetime.datetime | datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"not a TOML value: {v!r}")


def to_toml(doc: dict[str, Any]) -> str:
    """TOML text in the shapes the corpus uses: top-level scalars, then a `[table]` per table
    whose sub-tables are written as dotted keys (`hello.pkg-path = "hello"`)."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if not isinstance(table, dict):
            continue
        lines += ["", f"[{toml_key(name)}]"]
        for k, v in table.items():
            if isinstance(v, dict) and v:
                lines += [
                    f"{toml_key(k)}.{toml_key(k2)} = {toml_value(v2)}" for k2, v2 in v.items()
                ]
            else:
                lines.append(f"{toml_key(k)} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def named_in(message: str, path: list) -> bool:
    """Whether an error message names the mutated key or one of its parents (dotted)."""
    keys = [str(p) for p in path if isinstance(p, str)]
    return any(".".join(keys[:i]) in message for i in range(len(keys), 0, -1)) or not keys
