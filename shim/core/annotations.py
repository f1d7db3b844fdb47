"""Pod annotations floxk honours: a fixed allow-list, every value validated.

A pod author controls these strings. Nothing here may name a host path, a mount
option, a substituter or a key: values are matched against narrow grammars and
turned into plain data (an env reference, name sets, a mode, booleans). Other
`flox.dev/*` keys are reported as ignored, never honoured.
"""

from __future__ import annotations

from shim.core.errors import AnnotationError
from shim.core.names import MAX_NAME, MAX_OWNER, is_alnum, split_env_ref
from shim.core.records import factory, record

TYPE_CHECKING = False  # typing costs milliseconds at every container create
if TYPE_CHECKING:
    from collections.abc import Mapping

PREFIX = "flox.dev/"
ENVIRONMENT = "flox.dev/environment"
SKIP_CONTAINERS = "flox.dev/skip-containers"
SKIP_CONTAINERS_EXEC = "flox.dev/skip-containers-exec"
ACTIVATE_MODE = "flox.dev/activate-mode"
NIX_MUTABLE = "flox.dev/nix-mutable"
DISABLE_METRICS = "flox.dev/disable-metrics"
ALLOWED = (
    ENVIRONMENT,
    SKIP_CONTAINERS,
    SKIP_CONTAINERS_EXEC,
    ACTIVATE_MODE,
    NIX_MUTABLE,
    DISABLE_METRICS,
)

# Set by containerd's CRI on every spec it creates (not by the pod author).
CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CRI_CONTAINER_NAME = "io.kubernetes.cri.container-name"

MAX_VALUE = 1024
# Environment refs: one grammar with the hub's (shim.core.names.split_env_ref). Owner and name
# are what a hub can hold without escaping a URL path segment; a leading letter/digit and
# no ".." keep "." and ".." (and hidden names) out.
MODES = ("run", "dev")


@record(frozen=True)
class EnvRef:
    owner: str
    name: str
    generation: int | None = None

    def __str__(self) -> str:
        gen = f":{self.generation}" if self.generation is not None else ""
        return f"{self.owner}/{self.name}{gen}"


@record(frozen=True)
class FloxAnnotations:
    environment: EnvRef | None = None
    skip_containers: frozenset[str] = frozenset()
    skip_containers_exec: frozenset[str] = frozenset()
    activate_mode: str | None = None  # None: the manifest's activate.mode, else "run"
    nix_mutable: bool = False
    disable_metrics: bool = False
    ignored: list[str] = factory(list)  # flox.dev/* keys not on the allow-list


def parse_env_ref(value: str, *, key: str = ENVIRONMENT) -> EnvRef:
    """OWNER/NAME[:GEN] with a safe charset and length limits."""
    parts = split_env_ref(value)
    if parts is None:
        raise AnnotationError(
            f"annotation {key}={_show(value)} is not an environment reference",
            hint=f"use OWNER/NAME or OWNER/NAME:GENERATION: letters, digits, '.', '_', '-' "
            f"(owner <= {MAX_OWNER}, name <= {MAX_NAME} chars, generation a positive number)",
        )
    return EnvRef(*parts)


def _is_dns1123_label(s: str) -> bool:
    """[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"""
    return (
        0 < len(s) <= 63
        and s[0] != "-"
        and s[-1] != "-"
        and is_alnum(s.replace("-", ""))
        and s == s.lower()
    )


def parse_container_names(value: str, *, key: str) -> frozenset[str]:
    names = [n.strip() for n in value.split(",")] if value.strip() else []
    for n in names:
        if not _is_dns1123_label(n):
            raise AnnotationError(
                f"annotation {key}={_show(value)}: {_show(n)} is not a container name",
                hint="give a comma-separated list of container names "
                "(DNS-1123 labels: lowercase letters, digits, '-', at most 63 chars)",
            )
    return frozenset(names)


def parse_bool(value: str, *, key: str) -> bool:
    if value not in ("true", "false"):
        raise AnnotationError(
            f"annotation {key}={_show(value)} is not a boolean", hint='use "true" or "false"'
        )
    return value == "true"


def parse_mode(value: str, *, key: str = ACTIVATE_MODE) -> str:
    if value not in MODES:
        raise AnnotationError(
            f"annotation {key}={_show(value)} is not an activation mode",
            hint='use "run" (default) or "dev"',
        )
    return value


def parse_annotations(annotations: Mapping[str, str] | None) -> FloxAnnotations:
    """Validate the flox.dev/* annotations of one OCI spec; AnnotationError on a bad value."""
    annotations = annotations or {}
    ours = {k: v for k, v in annotations.items() if k.startswith(PREFIX)}
    for k, v in ours.items():
        if not isinstance(v, str) or len(v) > MAX_VALUE:
            raise AnnotationError(
                f"annotation {k} is too long or not a string",
                hint=f"annotation values are at most {MAX_VALUE} characters",
            )
    get = ours.get
    return FloxAnnotations(
        environment=parse_env_ref(ours[ENVIRONMENT]) if ENVIRONMENT in ours else None,
        skip_containers=parse_container_names(get(SKIP_CONTAINERS, ""), key=SKIP_CONTAINERS),
        skip_containers_exec=parse_container_names(
            get(SKIP_CONTAINERS_EXEC, ""), key=SKIP_CONTAINERS_EXEC
        ),
        activate_mode=parse_mode(ours[ACTIVATE_MODE]) if ACTIVATE_MODE in ours else None,
        nix_mutable=parse_bool(get(NIX_MUTABLE, "false"), key=NIX_MUTABLE),
        disable_metrics=parse_bool(get(DISABLE_METRICS, "false"), key=DISABLE_METRICS),
        ignored=sorted(k for k in ours if k not in ALLOWED),
    )


def _show(value: str) -> str:
    """Quote a hostile value for a message without flooding logs or events."""
    v = value if len(value) <= 80 else value[:77] + "..."
    return repr(v)
