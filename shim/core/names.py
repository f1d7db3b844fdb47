"""Checks of the narrow ASCII grammars names are held to, with str methods.

The create path of every container validates a few names; `re` (and the enum, functools
and collections it imports) would cost milliseconds there, these checks microseconds.
Each caller documents the regex its check is equivalent to. Standard library only.
"""

from __future__ import annotations

_NAME_PUNCT = str.maketrans("", "", "._-")


def is_alnum(s: str) -> bool:
    """[A-Za-z0-9]+ (str.isalnum alone would take any Unicode letter or digit)."""
    return s.isascii() and s.isalnum()


def is_name(s: str, max_len: int) -> bool:
    """[A-Za-z0-9][A-Za-z0-9._-]{0,max_len-1}: a letter or digit first."""
    return (
        0 < len(s) <= max_len
        and s.isascii()
        and s[0].isalnum()
        and s.translate(_NAME_PUNCT).isalnum()  # s[0] survives, so never empty
    )


def is_number(s: str, max_digits: int) -> bool:
    """[1-9][0-9]{0,max_digits-1}: a positive number without leading zeros."""
    return 0 < len(s) <= max_digits and s.isascii() and s.isdigit() and s[0] != "0"


MAX_OWNER = MAX_NAME = 100
MAX_GEN_DIGITS = 9


def split_env_ref(value: str) -> tuple[str, str, int | None] | None:
    """OWNER/NAME[:GEN] -> its parts, None when `value` is not one. The one grammar for
    environment refs, in pod annotations and on the hub alike: segments are names
    (<= 100 chars) without "..", GEN a positive number of at most 9 digits."""
    owner, slash, rest = value.partition("/")
    name, colon, gen = rest.partition(":")  # segments hold neither "/" nor ":"
    if (
        slash
        and is_name(owner, MAX_OWNER)
        and is_name(name, MAX_NAME)
        and ".." not in owner
        and ".." not in name
        and (not colon or is_number(gen, MAX_GEN_DIGITS))
    ):
        return owner, name, int(gen) if colon else None
    return None


def dollar_end(s: str) -> str:
    """`s` as a regex anchored with `$` saw it: `$` also matches before one final newline,
    so "x\\n" passed where "x" did. Kept, so no accepted value changes."""
    return s[:-1] if s.endswith("\n") else s
