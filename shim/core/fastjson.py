"""json.loads/json.dumps through the C accelerator `_json`, without the json package.

`import json` loads json.decoder, which compiles regexes: re, enum, functools and
collections, several milliseconds on every container create. The C scanner and encoder
that json itself uses need none of that, so the hot path calls them directly. Results and
errors are json's: the same values, the same strings, json.JSONDecodeError (a ValueError)
on bad input. Anything outside the common case (no `_json`, bytes that are not plain
UTF-8, a str starting with a BOM, indent, hooks...) goes to the json package itself.
Standard library only.
"""

from __future__ import annotations

try:
    from _json import encode_basestring as _encode_str
    from _json import encode_basestring_ascii as _encode_ascii
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # pragma: no cover - an interpreter without the accelerator
    _make_scanner = None  # type: ignore[assignment, misc]  # typeshed: `_json` always has it

_WS = " \t\n\r"  # JSON's whitespace, as json.decoder skips it
_NOT_PLAIN_UTF8 = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")  # BOMs json.loads detects
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """What the C scanner reads from a json.JSONDecoder: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}  # read by the pure-Python scanner only; the C one keeps its own


# typeshed types the context as a make_scanner; the C scanner reads JSONDecoder's attributes.
_scan = _make_scanner(_Context()) if _make_scanner is not None else None  # type: ignore[arg-type]


def loads(s: str | bytes | bytearray, **kwargs):
    """json.loads(s, **kwargs); without kwargs, through the C scanner."""
    if _scan is None or kwargs:
        return _json().loads(s, **kwargs)
    if isinstance(s, (bytes, bytearray)):
        # json.detect_encoding says UTF-8 for these: no BOM, no NUL in the first 4 bytes.
        if s.startswith(_NOT_PLAIN_UTF8) or 0 in s[:4]:
            return _json().loads(s)
        s = s.decode("utf-8", "surrogatepass")
    elif not isinstance(s, str) or s.startswith("\ufeff"):
        return _json().loads(s)  # its TypeError, or its "Unexpected UTF-8 BOM" error
    n = len(s)
    idx = n - len(s.lstrip(_WS))
    try:
        obj, end = _scan(s, idx)
    except StopIteration as err:
        raise _decode_error("Expecting value", s, err.value) from None
    rest = s[end:].lstrip(_WS)
    if rest:
        raise _decode_error("Extra data", s, n - len(rest))
    return obj


def dumps(
    obj,
    *,
    ensure_ascii: bool = True,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
    **kwargs,
) -> str:
    """json.dumps(obj, ...); with only these options (no indent), through the C encoder."""
    if _scan is None or kwargs:
        return _json().dumps(
            obj, ensure_ascii=ensure_ascii, separators=separators, sort_keys=sort_keys, **kwargs
        )
    encode_str = _encode_ascii if ensure_ascii else _encode_str
    if isinstance(obj, str):
        return encode_str(obj)
    item_sep, key_sep = separators if separators is not None else (", ", ": ")
    encoder = _make_encoder(
        {}, _default, encode_str, None, key_sep, item_sep, sort_keys, False, True
    )
    return "".join(encoder(obj, 0))


def _default(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _decode_error(msg: str, doc: str, pos: int) -> ValueError:
    from json.decoder import JSONDecodeError  # only on bad input: json's own error type

    return JSONDecodeError(msg, doc, pos)


def _json():
    import json

    return json
