"""manifest.toml and manifest.lock (v0 and v1): any input parses to the model or is a
ManifestError/LockError naming the file (and, for a mutated key, that key or its parent).

A lock reaches every node from a hub, so its parser sits on the node's trust boundary: past
parsing, what a node does next with a lock (systems, packages_for, install_paths, digest)
must fail only as a FloxkError too.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shim.core import model
from shim.core.errors import LockError, ManifestError
from tests.fuzz import strategies as S

SOURCE = "fuzz/env/manifest.toml"
LOCK_SOURCE = "fuzz/env/manifest.lock"
MANIFEST_KEYS = sorted(
    model._HONOURED | set(model._NOT_HONOURED) | model._IGNORED | model._DESCRIPTOR_KEYS
) + ["on-activate", "common", "systems", "activate", "mode", "environments"]
LOCK_KEYS = [
    "lockfile-version", "manifest", "packages", "install_id", "system", "outputs",
    "outputs_to_install", "outputs-to-install", "store_path", "priority", "group", "out",
]  # fmt: skip


def check_manifest(m: model.Manifest) -> None:
    """What the documented model promises of a parsed manifest."""
    assert m.version == 0 or m.version == 1 or m.version.startswith("1.")
    for install_id, d in m.install.items():
        assert d.install_id == install_id and d.kind in ("catalog", "flake", "store-path")
        assert isinstance(d.priority, int) and not isinstance(d.priority, bool) and d.priority >= 0
        assert d.outputs is None or d.outputs == "all" or all(isinstance(o, str) for o in d.outputs)
        if d.store_path is not None:
            assert model.STORE_PATH_RE.match(d.store_path)
    # set verbatim as K=V in the container's environment (docs/environments.md)
    assert all(isinstance(v, str) and "\0" not in v for v in m.vars.values())
    assert all(k and "=" not in k and "\0" not in k for k in m.vars)
    assert m.hook_on_activate is None or isinstance(m.hook_on_activate, str)
    assert all(isinstance(v, str) for v in m.profile.values())
    assert m.systems is None or all(isinstance(s, str) for s in m.systems)
    assert m.activate_mode in (None, "run", "dev")
    assert all(isinstance(w, str) for w in m.warnings)


def use_lock(lock: model.Lock) -> None:
    """What a node does with a parsed lock; only FloxkErrors may come out of it."""
    assert lock.lockfile_version in (0, 1)
    check_manifest(lock.manifest)
    lock.digest()
    for system in lock.systems() + ["x86_64-linux"]:
        try:
            packages = lock.packages_for(system)
        except LockError:
            continue
        for p in packages:
            try:
                paths = p.install_paths()
            except LockError:
                continue
            assert paths and all(model.STORE_PATH_RE.match(x) for x in paths)


def parse_manifest_or_error(text: str, path: list | None = None) -> None:
    try:
        m = model.parse_manifest(text, source=SOURCE)
    except ManifestError as e:
        assert str(e).startswith(SOURCE), e
        if path is not None:
            assert S.named_in(str(e), path), (path, str(e))
        return
    check_manifest(m)


def parse_lock_or_error(text: str) -> None:
    try:
        lock = model.parse_lock(text, source=LOCK_SOURCE)
    except LockError as e:
        assert LOCK_SOURCE in str(e), e
        return
    except ManifestError as e:  # the manifest a lock embeds
        assert str(e).startswith(f"{LOCK_SOURCE} (manifest)"), e
        return
    use_lock(lock)


# --- manifest.toml ---------------------------------------------------------------------------


@given(st.sampled_from(S.MANIFESTS).flatmap(lambda m: S.mutated(m, S.TOML, MANIFEST_KEYS)))
def test_manifest_mutated_structure(case):
    doc, path = case
    if not isinstance(doc, dict):
        return  # a TOML document is always a table
    parse_manifest_or_error(S.to_toml(doc), path)


@given(
    st.sampled_from(S.MANIFEST_TEXTS).flatmap(
        lambda t: S.text_edits(t, "[]{}=\"'.,#\n \\aZ0-_\u00e9\x00")
    )
)
def test_manifest_mutated_text(text):
    parse_manifest_or_error(text)


@given(st.dictionaries(S.TEXT, S.JSON, max_size=5), st.sampled_from(S.MANIFESTS))
def test_manifest_from_json_data(extra, base):
    """A lock embeds its manifest as JSON: null, and types TOML cannot write, arrive there."""
    data = {**base, **extra}
    try:
        m = model.manifest_from_dict(data, source=SOURCE)
    except ManifestError as e:
        assert str(e).startswith(SOURCE), e
        return
    check_manifest(m)


@given(
    st.sampled_from(S.MANIFESTS),
    st.sampled_from(["vars", "hook", "profile", "options"]),
    st.dictionaries(S.TEXT, st.one_of(S.TEXT, S.TOML), max_size=4),
)
def test_manifest_tables_with_any_keys(base, table, body):
    """The string tables (vars, hook, profile) and options with any keys and values."""
    parse_manifest_or_error(S.to_toml({**base, table: body}), [table])


@pytest.mark.parametrize(
    "text",
    [
        'schema-version = "1.\u0663"',  # a non-ASCII digit: not a schema-version Flox writes
        'schema-version = "1.2\n"',
    ],
)
def test_found_schema_version_is_ascii(text):
    with pytest.raises(ManifestError, match="schema-version"):
        model.parse_manifest(text, source=SOURCE)


@pytest.mark.parametrize(
    "text",
    [
        '[vars]\n"" = ""',
        '[vars]\n"A=B" = "x"',
        '[vars]\n"A\\u0000" = "x"',
        '[vars]\nA = "x\\u0000"',
    ],
)
def test_found_vars_that_cannot_be_set_verbatim(text):
    """An empty name, or one with '=' (NAME=value would set another variable), or a NUL."""
    with pytest.raises(ManifestError, match=rf"{SOURCE}, line [12]: 'vars\."):
        model.parse_manifest(text, source=SOURCE)


def test_found_deep_nesting_is_a_manifest_error():
    """tomllib recurses per nesting level: deep arrays or inline tables ended in RecursionError."""
    for text in ("a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "1" + "}" * 5000):
        with pytest.raises(ManifestError, match=rf"^{SOURCE}: invalid TOML: nested too deeply"):
            model.parse_manifest(text, source=SOURCE)


# --- manifest.lock ---------------------------------------------------------------------------


@given(st.sampled_from(S.LOCKS).flatmap(lambda lock: S.mutated(lock, S.JSON, LOCK_KEYS)))
def test_lock_mutated_structure(case):
    doc, _ = case
    parse_lock_or_error(json.dumps(doc))


@given(st.sampled_from(S.LOCKS_V0).flatmap(lambda lock: S.mutated(lock["packages"], S.JSON)))
def test_lock_v0_mutated_packages(case):
    packages, _ = case
    parse_lock_or_error(json.dumps({**S.LOCKS_V0[0], "packages": packages}))


@given(
    st.sampled_from(S.LOCKS_V1).flatmap(lambda lock: S.mutated(lock["packages"], S.JSON, LOCK_KEYS))
)
def test_lock_v1_mutated_packages(case):
    packages, _ = case
    parse_lock_or_error(json.dumps({**S.LOCKS_V1[0], "packages": packages}))


@given(st.sampled_from(S.LOCK_TEXTS).flatmap(lambda t: S.text_edits(t, '[]{}":,\\ \n0eE-.u')))
def test_lock_mutated_text(text):
    parse_lock_or_error(text)


@pytest.mark.parametrize(
    "packages",
    [
        {"x86_64-linux": 5},  # issue 20: AttributeError 'int' object has no attribute 'items'
        {"x86_64-linux": [1]},
        {"x86_64-linux": "hello"},
        {"x86_64-linux": {"hello": {"priority": "high"}}},
        {"x86_64-linux": {"hello": {"priority": True}}},
    ],
)
def test_found_v0_packages_of_the_wrong_shape(packages):
    text = json.dumps({**S.LOCKS_V0[0], "packages": packages})
    with pytest.raises(LockError, match=rf"{LOCK_SOURCE}: packages.x86_64-linux"):
        model.parse_lock(text, source=LOCK_SOURCE)


@pytest.mark.parametrize(
    "text",
    [
        # int() refuses more than 4300 digits with a ValueError that is no JSONDecodeError
        '{"lockfile-version": 1, "x": ' + "1" * 5000 + "}",
        # a lone surrogate escape: valid JSON, no UTF-8 for the digest
        '{"lockfile-version": 1, "manifest": {"version": 1, "vars": {"a": "\\ud800"}}, "packages": []}',
        "[" * 100_000,
    ],
)
def test_found_lock_json_edge_cases_are_lock_errors(text):
    with pytest.raises(LockError, match=LOCK_SOURCE):
        model.parse_lock(text, source=LOCK_SOURCE)


@example(b'{"lockfile-version": 1}\xff')
@given(st.binary(max_size=200))
def test_lock_file_bytes(tmp_path_factory, raw):
    """load_lock on any bytes (not UTF-8, NULs): a LockError naming the file."""
    path = tmp_path_factory.mktemp("lock") / "manifest.lock"
    path.write_bytes(raw)
    try:
        use_lock(model.load_lock(path))
    except (LockError, ManifestError) as e:
        assert str(path) in str(e)
