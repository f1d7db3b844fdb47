"""One exception family per failure, each with a message and a hint (pip's diagnostic errors).

The CLI maps them to exit codes; floxk-runc turns them into runc log lines.
"""

from __future__ import annotations


class FloxkError(Exception):
    """Base of every error floxk reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ManifestError(FloxkError):
    """A manifest.toml that cannot be read or is not valid."""


class LockError(FloxkError):
    """A manifest.lock that cannot be read, or lacks what this node needs."""


class NotFoundError(FloxkError):
    """A hub reference, generation or file that does not exist."""

    exit_code = 3


class NixError(FloxkError):
    """Nix failed: substitution, signature check, build or copy."""


class TrustError(FloxkError):
    """A record or store path without a signature by a key this node trusts, or a record
    that is not the one asked for (another environment, an older generation)."""

    exit_code = 5

    def __init__(self, message: str, *, hint: str | None = None, paths: list[str] | None = None):
        super().__init__(message, hint=hint)
        self.paths = paths or []


class AccessError(FloxkError):
    """A private hub or cache refused the token a request carried, or it carried none."""

    exit_code = 5


class RealizeError(FloxkError):
    """An environment could not be realized on this node."""


class ConfigError(FloxkError):
    """Node configuration (node.toml) is missing or invalid."""


class AnnotationError(FloxkError):
    """A pod annotation that is not allowed or has an invalid value."""


class CommandError(FloxkError):
    """An external program failed; its output is kept for the message."""

    def __init__(self, argv: list[str], returncode: int, output: str, *, hint: str | None = None):
        self.argv = argv
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(
            f"{argv[0]} exited with {returncode}: {' '.join(argv)}" + (f"\n{tail}" if tail else ""),
            hint=hint,
        )


class MissingDependencyError(FloxkError):
    """A program floxk needs is not installed."""

    exit_code = 4


class InUseError(FloxkError):
    """Something floxk would remove is still in use (flox containers running)."""

    exit_code = 6
