"""shim.core.fastjson against the json package: same values, same text, same errors."""

from __future__ import annotations

import json
import math

import pytest

from shim.core import fastjson

DOCS = [
    "{}",
    "[]",
    '""',
    "0",
    "-0",
    "1e400",
    "-12.5e-3",
    "123456789012345678901234567890",
    "true",
    "false",
    "null",
    ' \t\n\r{"a": [1, 2.0, "x", null, true, {"b": {}}]} \n',
    '{"dup": 1, "dup": 2}',
    '"\\u00e9\\ud83d\\ude00 \\n \\" \\\\ \\/"',
    '"caf\u00e9 \U0001f600"',
    '{"ociVersion": "1.1.0", "annotations": {"flox.dev/environment": "acme/hello:3"}}',
    "[[[[[[[[[[]]]]]]]]]]",
    '{"nested": {"list": [{"k": "v"}, [], [[]]]}}',
]
BAD = [
    "",
    "   ",
    "{",
    "[1,]",
    '{"a" 1}',
    "{} []",
    "1 2",
    "nul",
    "'single'",
    '"unterminated',
    '"ctrl \x01 char"',
    "[1, 2",
    "01",
    "\ufeff{}",
    "{}\x00",
]
VALUES = [
    {},
    [],
    "",
    'caf\u00e9 \U0001f600 \x00 \n "q" \\',
    0,
    -1,
    2**80,
    1.5,
    -0.0,
    1e300,
    True,
    False,
    None,
    {"b": 1, "a": [1, 2, {"c": None}], "\u00e9": "\u00e9"},
    {1: "int key", 2.5: "float key", False: "bool", None: "none"},
    ("tuple", "is", "a list"),
    {"z": {"y": {"x": [3, 2, 1]}}, "a": 0},
]


@pytest.mark.parametrize("doc", DOCS)
def test_loads_matches_json(doc):
    assert fastjson.loads(doc) == json.loads(doc)
    assert fastjson.loads(doc.encode()) == json.loads(doc.encode())
    assert fastjson.loads(bytearray(doc.encode())) == json.loads(bytearray(doc.encode()))


def test_loads_constants_and_big_numbers():
    got = fastjson.loads("[NaN, Infinity, -Infinity, 1.0, 10000000000000000000000]")
    assert math.isnan(got[0]) and got[1:3] == [math.inf, -math.inf]
    assert got[3:] == [1.0, 10**22] and type(got[3]) is float and type(got[4]) is int


@pytest.mark.parametrize("doc", BAD)
def test_loads_errors_match_json(doc):
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(doc)
    with pytest.raises(json.JSONDecodeError) as got:
        fastjson.loads(doc)
    assert (got.value.msg, got.value.pos) == (want.value.msg, want.value.pos)
    assert isinstance(got.value, ValueError)  # what callers catch


@pytest.mark.parametrize(
    "data",
    [
        "{}".encode("utf-16"),
        "[1]".encode("utf-32"),
        b'\xef\xbb\xbf{"a": 1}',
        "[1]".encode("utf-16-be"),
        "[2]".encode("utf-32-le"),
    ],
)
def test_loads_other_encodings_like_json(data):
    assert fastjson.loads(data) == json.loads(data)


def test_loads_type_error_and_kwargs_like_json():
    with pytest.raises(TypeError):
        fastjson.loads(12)
    assert fastjson.loads('{"a": 1.5}', parse_float=str) == {"a": "1.5"}


def test_loads_invalid_utf8_bytes_like_json():
    with pytest.raises(UnicodeDecodeError):
        json.loads(b'"\xff\xfa"')
    with pytest.raises(UnicodeDecodeError):
        fastjson.loads(b'"\xff\xfa"')


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"sort_keys": True},
        {"separators": (",", ":")},
        {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False},
        {"ensure_ascii": False},
    ],
)
def test_dumps_matches_json(value, opts):
    if opts.get("sort_keys") and isinstance(value, dict) and len({type(k) for k in value}) > 1:
        with pytest.raises(TypeError):
            json.dumps(value, **opts)
        with pytest.raises(TypeError):
            fastjson.dumps(value, **opts)
        return
    text = fastjson.dumps(value, **opts)
    assert text == json.dumps(value, **opts)
    assert fastjson.loads(text) == json.loads(text)


def test_dumps_round_trip_of_docs():
    for doc in DOCS:
        value = json.loads(doc)
        assert fastjson.loads(fastjson.dumps(value)) == value


def test_dumps_special_floats_and_errors_like_json():
    assert fastjson.dumps([math.nan, math.inf, -math.inf]) == "[NaN, Infinity, -Infinity]"
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        fastjson.dumps({"s": {1}})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        fastjson.dumps(loop)


def test_dumps_other_options_go_to_json():
    value = {"b": [1, 2], "a": None}
    assert fastjson.dumps(value, indent=2, sort_keys=True) == json.dumps(
        value, indent=2, sort_keys=True
    )
