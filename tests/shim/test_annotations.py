"""The annotation allow-list: every value a pod author writes is checked against a narrow grammar."""

from __future__ import annotations

import pytest

from shim.core.annotations import EnvRef, parse_annotations, parse_env_ref
from shim.core.errors import AnnotationError

GOOD_REFS = [
    ("flox/quotes-app", EnvRef("flox", "quotes-app")),
    ("team.a/my_env:12", EnvRef("team.a", "my_env", 12)),
    ("A1/b.c-d", EnvRef("A1", "b.c-d")),
]
BAD_REFS = [
    "",
    "noslash",
    "a/b/c",
    "../etc",
    "owner/..",
    "owner/.hidden",
    "owner/name:0",
    "owner/name:-1",
    "owner/name:1x",
    "owner/name:",
    "/abs/path",
    "owner/na me",
    "owner/name;rm -rf /",
    "owner/$(id)",
    "file:///etc/passwd",
    "owner/name?substituters=http://evil",
    "o" * 101 + "/name",
    "owner/" + "n" * 101,
    "owner/name:1234567890",
    "owner/na\nme",
]


@pytest.mark.parametrize(("value", "want"), GOOD_REFS)
def test_env_ref_accepts(value, want):
    assert parse_env_ref(value) == want
    assert str(parse_env_ref(value)) == value


@pytest.mark.parametrize("value", BAD_REFS)
def test_env_ref_rejects_naming_the_key(value):
    with pytest.raises(AnnotationError) as e:
        parse_annotations({"flox.dev/environment": value})
    assert "flox.dev/environment" in e.value.message
    assert "OWNER/NAME" in e.value.hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("flox.dev/skip-containers", "Sidecar"),
        ("flox.dev/skip-containers", "a,,b"),
        ("flox.dev/skip-containers", "-lead"),
        ("flox.dev/skip-containers", "x" * 64),
        ("flox.dev/skip-containers", "../../host"),
        ("flox.dev/skip-containers-exec", "a;b"),
        ("flox.dev/activate-mode", "build"),
        ("flox.dev/activate-mode", "RUN"),
        ("flox.dev/nix-mutable", "yes"),
        ("flox.dev/nix-mutable", "True"),
        ("flox.dev/disable-metrics", "1"),
        ("flox.dev/environment", "a/b" + " " * 2000),
    ],
)
def test_bad_values_name_key_and_what_is_allowed(key, value):
    with pytest.raises(AnnotationError) as e:
        parse_annotations({"flox.dev/environment": "o/n", key: value})
    assert key in e.value.message
    assert e.value.hint


def test_full_set_parses_to_plain_data():
    a = parse_annotations(
        {
            "flox.dev/environment": "flox/redis:3",
            "flox.dev/skip-containers": "istio-proxy, log-shipper",
            "flox.dev/skip-containers-exec": "debug",
            "flox.dev/activate-mode": "dev",
            "flox.dev/nix-mutable": "true",
            "flox.dev/disable-metrics": "false",
            "io.kubernetes.cri.container-type": "container",
        }
    )
    assert a.environment == EnvRef("flox", "redis", 3)
    assert a.skip_containers == {"istio-proxy", "log-shipper"}
    assert a.skip_containers_exec == {"debug"}
    assert a.activate_mode == "dev"
    assert a.nix_mutable is True
    assert a.disable_metrics is False
    assert a.ignored == []


def test_unknown_flox_keys_are_reported_never_honoured():
    a = parse_annotations(
        {
            "flox.dev/environment": "o/n",
            "flox.dev/substituters": "http://evil.example",
            "flox.dev/store-path": "/etc",
            "other.io/x": "y",
        }
    )
    assert a.ignored == ["flox.dev/store-path", "flox.dev/substituters"]
    # Nothing of the hostile values made it into the parsed result.
    assert "evil" not in repr(a) and "/etc" not in repr(a)


def test_defaults_without_annotations():
    a = parse_annotations(None)
    assert a.environment is None and a.activate_mode is None
    assert not a.nix_mutable and not a.skip_containers
