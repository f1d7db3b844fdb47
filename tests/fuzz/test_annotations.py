"""Pod annotations, as a pod author writes them and as config.json carries them: the allow-listed
keys' grammars (unicode, lengths, near misses), unknown flox.dev/* keys, values of any JSON
type. The result is plain data within the documented grammars, or an AnnotationError naming
the key; never another exception.

The grammars are the regexes the str-method checks in shim.core.names are documented to equal
(re is fine here: tests are not a container create).
"""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from shim import runc
from shim.core import annotations as ann
from shim.core.errors import AnnotationError
from shim.core.names import split_env_ref
from tests.fuzz import strategies as S

SEG = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
ENV_REF = re.compile(rf"({SEG})/({SEG})(?::([1-9][0-9]{{0,8}}))?", re.ASCII)
DNS1123 = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)


def grammar_env_ref(value: str) -> tuple[str, str, int | None] | None:
    m = ENV_REF.fullmatch(value)
    if m is None or ".." in m[1] or ".." in m[2]:
        return None
    return m[1], m[2], int(m[3]) if m[3] else None


# Valid values, then one edit away from valid (a character from the edges of the grammar).
EDGE_CHARS = "._-/:,\n \t\u00e9\u0663\u00b2\u212a\u0130\uff10A0aZz9" + "\x00"
VALID_REF = st.from_regex(ENV_REF, fullmatch=True)
VALID_NAMES = st.lists(st.from_regex(DNS1123, fullmatch=True), max_size=4).map(",".join)


@st.composite
def near_miss(draw, valid: st.SearchStrategy[str]) -> str:
    value = draw(valid)
    i = draw(st.integers(0, len(value)))
    if draw(st.booleans()) and value:
        return value[:i] + value[i + 1 :]
    return value[:i] + draw(st.sampled_from(EDGE_CHARS)) + value[i:]


def values_for(valid: st.SearchStrategy[str]) -> st.SearchStrategy:
    return st.one_of(
        valid,
        near_miss(valid),
        S.TEXT,
        st.text(min_size=1000, max_size=1100),
        S.JSON,  # config.json is JSON: a value need not be a string there
    )


ANNOTATIONS = st.fixed_dictionaries(
    {},
    optional={
        ann.ENVIRONMENT: values_for(VALID_REF),
        ann.SKIP_CONTAINERS: values_for(VALID_NAMES),
        ann.SKIP_CONTAINERS_EXEC: values_for(VALID_NAMES),
        ann.ACTIVATE_MODE: values_for(st.sampled_from(ann.MODES)),
        ann.NIX_MUTABLE: values_for(st.sampled_from(["true", "false"])),
        ann.DISABLE_METRICS: values_for(st.sampled_from(["true", "false"])),
        ann.CRI_CONTAINER_TYPE: st.sampled_from(["sandbox", "container"]),
        ann.CRI_CONTAINER_NAME: VALID_NAMES,
    },
).flatmap(
    lambda fixed: st.dictionaries(
        st.one_of(S.TEXT, S.TEXT.map(lambda k: ann.PREFIX + k)), S.TEXT, max_size=3
    ).map(lambda extra: {**extra, **fixed})
)


@example({ann.ENVIRONMENT: "a/b\n"})
@example({ann.ENVIRONMENT: "\u212a/b"})  # KELVIN SIGN: str.isalnum, not [A-Za-z0-9]
@example({ann.SKIP_CONTAINERS: "app,\u212aelvin"})
@example({ann.NIX_MUTABLE: True})
@given(ANNOTATIONS)
def test_annotations(annotations):
    try:
        parsed = ann.parse_annotations(annotations)
    except AnnotationError as e:
        assert any(k in str(e) for k in annotations if k.startswith(ann.PREFIX)), e
        return
    ours = {k: v for k, v in annotations.items() if k.startswith(ann.PREFIX)}
    if ann.ENVIRONMENT in ours:
        env = parsed.environment
        assert grammar_env_ref(ours[ann.ENVIRONMENT]) == (env.owner, env.name, env.generation)
        assert split_env_ref(str(env)) == (env.owner, env.name, env.generation)
    else:
        assert parsed.environment is None
    for names in (parsed.skip_containers, parsed.skip_containers_exec):
        assert all(DNS1123.fullmatch(n) for n in names)
    assert parsed.activate_mode in (None, *ann.MODES)
    assert parsed.nix_mutable is (ours.get(ann.NIX_MUTABLE) == "true")
    assert parsed.disable_metrics is (ours.get(ann.DISABLE_METRICS) == "true")
    assert parsed.ignored == sorted(k for k in ours if k not in ann.ALLOWED)


@given(st.one_of(VALID_REF, near_miss(VALID_REF), S.TEXT))
def test_env_ref_is_the_documented_grammar(value):
    assert split_env_ref(value) == grammar_env_ref(value)


@given(st.one_of(VALID_NAMES, near_miss(VALID_NAMES)))
def test_container_names_are_dns_labels(value):
    try:
        names = ann.parse_container_names(value, key=ann.SKIP_CONTAINERS)
    except AnnotationError as e:
        assert ann.SKIP_CONTAINERS in str(e)
        return
    assert names == {n.strip() for n in value.split(",")} - ({""} if not value.strip() else set())
    assert all(DNS1123.fullmatch(n) for n in names)


@example(["flox.dev/environment"])
@example("flox.dev/environment")
@given(S.JSON)
def test_spec_annotations_of_any_json_type(annotations):
    """floxk-runc's first look at a create: annotations as config.json has them, whatever
    their JSON type. Deciding must not raise (it runs before any error handling)."""
    flox = runc._is_flox_container(annotations)
    assert flox == (
        isinstance(annotations, dict)
        and ann.ENVIRONMENT in annotations
        and annotations.get(ann.CRI_CONTAINER_TYPE) != "sandbox"
    )
