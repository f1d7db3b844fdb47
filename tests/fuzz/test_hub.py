"""Hub files and records as a hub serves them (bytes, over file:// and http://):
resolution gives a record that is what the ref names, with a digest that matches its lock,
or a FloxkError naming the hub file; never another exception.

A hub serves `latest` and one pointer per generation (`<GEN>.json`, naming the store path
of the signed record); both are fuzzed as bytes. The record itself reaches a node only as
a store path Nix substituted and verified against the node's keys (tests/env/test_trust.py
covers that with real Nix); its parser is fuzzed here with the bytes handed over where
Nix would hand them (`hub._substituted_record` replaced: the one stand-in, named here),
so every example costs no Nix call.

The http:// hub is testkit's StaticServer (Python's http.server) over the same tree, on a loopback port.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shim.core import hub
from shim.core.digest import lock_digest
from shim.core.errors import FloxkError, LockError, ManifestError, NotFoundError
from testkit.httpserve import StaticServer
from tests.fuzz import strategies as S

OWNER, NAME = "alice", "hello"
ENV_DIR = hub.env_dir(OWNER, NAME)
RECORD_KEYS = ["floxk-env-record", "owner", "name", "generation", "digest", "lock"]
POINTER_KEYS = ["floxk-hub-record", "owner", "name", "generation", "record"]
STORE_PATH = "/nix/store/" + "a" * 32 + "-" + hub.record_store_name(OWNER, NAME, 1)
KEY = "floxk-test:" + "A" * 43 + "="  # never checked: Nix's part is replaced, see above


def good_record(lock: dict, generation: int = 1) -> dict:
    return hub.make_record(OWNER, NAME, generation, _Lock(lock), created="2026-12-01T00:00:00Z")


class _Lock:
    """What make_record reads of a lock: its data, digest and systems."""

    def __init__(self, data: dict):
        self.raw = data

    def digest(self) -> str:
        return lock_digest(self.raw)

    def systems(self) -> list[str]:
        return ["x86_64-linux"]


def good_pointer(generation: int = 1) -> dict:
    return hub.make_pointer(OWNER, NAME, generation, STORE_PATH)


def trust_in(state_dir: str) -> hub.Trust:
    return hub.Trust(substituters=[], trusted_keys=[KEY], state_dir=state_dir)


@contextlib.contextmanager
def records_served_as(raw: bytes):
    """Nix's substitution and signature check replaced: the record's bytes as given."""
    with mock.patch.object(hub, "_substituted_record", lambda store_path, trust: raw):
        yield


def _served(draw, kind: str, doc: object) -> bytes:
    """`doc` as a hub would serve it: JSON, edited as text when `kind` says so, maybe with
    a few stray bytes."""
    text = json.dumps(doc)
    if kind == "text":
        text = draw(S.text_edits(text, '[]{}":,\\ \n0-1/'))
    raw = text.encode()
    if draw(st.booleans()):
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.binary(min_size=1, max_size=4)) + raw[i:]
    return raw


KINDS = st.sampled_from(["mutated", "text", "bytes"])


@st.composite
def served_pointers(draw) -> bytes:
    """A pointer's bytes: a real one mutated, edited as text, or any bytes at all."""
    kind = draw(KINDS)
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    doc, _ = draw(S.mutated(good_pointer(), S.JSON, POINTER_KEYS))
    return _served(draw, kind, doc)


@st.composite
def served_records(draw) -> bytes:
    """A record's bytes: a real one mutated (digest recomputed or not), edited as text, or
    any bytes at all."""
    kind = draw(KINDS)
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    lock = draw(st.sampled_from(S.LOCKS))
    record, _ = draw(S.mutated(good_record(lock), S.JSON, RECORD_KEYS))
    if draw(st.booleans()) and isinstance(record, dict) and isinstance(record.get("lock"), dict):
        try:  # a consistent record: what a buggy pusher would sign, to reach the lock parser
            record["digest"] = lock_digest(record["lock"])
        except UnicodeEncodeError:
            pass
        if draw(st.booleans()):
            mutated_lock, _ = draw(S.mutated(record["lock"], S.JSON, ["packages", "manifest"]))
            if isinstance(mutated_lock, dict):
                record["lock"] = mutated_lock
                record["digest"] = lock_digest(mutated_lock)
    return _served(draw, kind, record)


LATEST = st.one_of(
    st.sampled_from(
        [
            b"1",
            b"1\n",
            b" 1 \n",
            b"0",
            b"-1",
            b"+1",
            b"1_0",
            b"01",
            "\u0661".encode(),
            b"\xff",
            b"",
            b"1.0",
            b"1e3",
            b"9" * 12,
            b"9" * 5000,
            b"\x001",
        ]
    ),  # fmt: skip
    st.binary(max_size=12),
)


def write_hub(root: Path, latest: bytes | None, records: dict[str, bytes]) -> str:
    d = root / ENV_DIR
    d.mkdir(parents=True)
    if latest is not None:
        (d / "latest").write_bytes(latest)
    for name, raw in records.items():
        (d / name).write_bytes(raw)
    return root.as_uri()


def check_resolution(ref: str, hubs: list[str], state_dir: str) -> None:
    try:
        raw = hub.fetch(ref, hubs, trust_in(state_dir))
    except NotFoundError as e:
        assert f"{OWNER}/{NAME}" in str(e), e
        return
    except FloxkError as e:
        assert ENV_DIR in str(e) or any(h in str(e) for h in hubs), e
        return
    owner, name, generation = hub.parse_ref(ref)
    assert (raw.owner, raw.name) == (owner, name)
    assert isinstance(raw.generation, int) and not isinstance(raw.generation, bool)
    assert raw.generation >= 1 and (generation is None or raw.generation == generation)
    assert raw.url.endswith(f"{ENV_DIR}/{raw.generation}.json")
    assert isinstance(raw.lock_data, dict) and raw.digest == lock_digest(raw.lock_data)
    try:
        parsed = raw.parsed()
    except (LockError, ManifestError) as e:
        assert raw.url in str(e), e
        return
    assert parsed.lock.digest() == raw.digest


GOOD_RECORD = json.dumps(good_record(S.LOCKS_V1[0])).encode()
GOOD_POINTER = json.dumps(good_pointer()).encode()


@example(latest=b"1", pointer=b'{"floxk-hub-record": 2, "x": "\xff"}', named=False)
@given(latest=LATEST, pointer=served_pointers(), named=st.booleans())
def test_file_hub_serves_any_bytes(latest, pointer, named):
    with tempfile.TemporaryDirectory() as d, records_served_as(GOOD_RECORD):
        url = write_hub(Path(d) / "hub", latest, {"1.json": pointer, "10.json": pointer})
        ref = f"{OWNER}/{NAME}:1" if named else f"{OWNER}/{NAME}"
        check_resolution(ref, [url], str(Path(d) / "state"))


@given(record=served_records())
def test_any_record_bytes_behind_a_good_pointer(record):
    with tempfile.TemporaryDirectory() as d, records_served_as(record):
        url = write_hub(Path(d) / "hub", b"1", {"1.json": GOOD_POINTER})
        check_resolution(f"{OWNER}/{NAME}", [url], str(Path(d) / "state"))


@pytest.fixture(scope="module")
def http_hub(tmp_path_factory):
    """(directory served, its http:// URL)."""
    root = tmp_path_factory.mktemp("http-hub")
    server = StaticServer(root)
    yield root, server.url
    server.close()


@given(latest=LATEST, pointer=served_pointers())
def test_http_hub_serves_any_bytes(http_hub, latest, pointer):
    root, url = http_hub
    d = root / ENV_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / "latest").write_bytes(latest)
    (d / "1.json").write_bytes(pointer)
    with tempfile.TemporaryDirectory() as state, records_served_as(GOOD_RECORD):
        check_resolution(f"{OWNER}/{NAME}", [url], state)


# --- found by the properties above, kept as explicit cases ---------------------------------


@pytest.mark.parametrize("latest", [b"1_0", b"+1", b"-1", b"0", "\u0661".encode(), b"01"])
def test_found_latest_must_be_a_plain_generation_number(tmp_path, latest):
    """int() took all of these: `1_0` resolved generation 10, `-1` looked for -1.json."""
    pointer = json.dumps(good_pointer(10)).encode()
    url = write_hub(tmp_path / "hub", latest, {"10.json": pointer, "1.json": pointer})
    with pytest.raises(FloxkError, match=rf"{ENV_DIR}/latest is not a generation number"):
        hub.fetch(f"{OWNER}/{NAME}", [url], trust_in(str(tmp_path / "state")))


@pytest.mark.parametrize("where", ["latest", "1.json"])
def test_found_non_utf8_hub_file_is_a_floxk_error(tmp_path, where):
    """A UnicodeDecodeError came out of reading a hub file that is not UTF-8."""
    files = {"1.json": GOOD_POINTER}
    latest = b"1\n"
    if where == "latest":
        latest = b"\xff1"
    else:
        files["1.json"] = files["1.json"].replace(b'"alice"', b'"alice\xff"')
    url = write_hub(tmp_path / "hub", latest, files)
    with pytest.raises(FloxkError, match=rf"{ENV_DIR}/{where}.*not UTF-8"):
        hub.fetch(f"{OWNER}/{NAME}", [url], trust_in(str(tmp_path / "state")))


def test_found_lone_surrogate_in_a_record_lock(tmp_path):
    """Valid JSON, but the digest cannot be computed: a UnicodeEncodeError came out."""
    text = json.dumps(good_record({"lockfile-version": 1}))
    text = text.replace('{"lockfile-version": 1}', '{"lockfile-version": 1, "x": "\\ud800"}')
    url = write_hub(tmp_path / "hub", b"1", {"1.json": GOOD_POINTER})
    with (
        records_served_as(text.encode()),
        pytest.raises(LockError, match=rf"{ENV_DIR}/1.json.*not valid Unicode"),
    ):
        hub.fetch(f"{OWNER}/{NAME}", [url], trust_in(str(tmp_path / "state")))


def test_found_deeply_nested_record(tmp_path):
    """The C scanner's RecursionError is no ValueError: it came out of fetch()."""
    state = str(tmp_path / "state")
    url = write_hub(tmp_path / "hub", b"1", {"1.json": b"[" * 100_000})
    with pytest.raises(LockError, match=rf"{ENV_DIR}/1.json: invalid JSON"):
        hub.fetch(f"{OWNER}/{NAME}", [url], trust_in(state))
    url = write_hub(tmp_path / "hub2", b"1", {"1.json": GOOD_POINTER})
    with records_served_as(b"[" * 100_000), pytest.raises(LockError, match="nested too deeply"):
        hub.fetch(f"{OWNER}/{NAME}", [url], trust_in(state))


def test_a_good_pointer_and_record_resolve(tmp_path):
    """The properties above can reach the lock: a well-formed hub resolves."""
    url = write_hub(tmp_path / "hub", b"1\n", {"1.json": GOOD_POINTER})
    with records_served_as(GOOD_RECORD):
        raw = hub.fetch(f"{OWNER}/{NAME}", [url], trust_in(str(tmp_path / "state")))
    assert (raw.owner, raw.name, raw.generation) == (OWNER, NAME, 1)
    assert raw.parsed().lock.digest() == lock_digest(S.LOCKS_V1[0])
