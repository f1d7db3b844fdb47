"""Exit codes, documented in docs/cli.md. Scripts may rely on them."""

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_FOUND = 3
    MISSING_DEPENDENCY = 4
    TIMEOUT = 5
    IN_USE = 6
    INTERRUPTED = 130
