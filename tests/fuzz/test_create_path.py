"""floxk-runc `create` of a flox container against whatever a hub serves and whatever
annotations the pod carries: either config.json is rewritten as a whole (the environment
mounted read-only) and the real runc is exec'd, or the create fails with one error line in
runc's --log, config.json byte-identical, and never with "internal error" (what main()
writes for an exception that is not a FloxkError).

shim.runc.main() runs in this process with the exec of the real runc recorded; node.toml,
the hub (file://), the state dir and the parsed-config cache are the test's temp dirs.
Realization runs for real: Nix against the file:// hub, which signs nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from shim import runc
from shim.core import node
from shim.core.spec import ENV_MOUNT, STORE_MOUNT
from tests.fuzz import strategies as S
from tests.fuzz.test_annotations import ANNOTATIONS
from tests.fuzz.test_hub import ENV_DIR, LATEST, NAME, OWNER, good_record, served_records

ENV = "flox.dev/environment"


class ExecRunc(BaseException):
    pass


def spec_with(annotations: dict) -> dict:
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["hello"], "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "annotations": annotations,
    }


def create(root: Path, annotations: dict, latest: bytes, record: bytes) -> None:
    hub = root / "hub" / ENV_DIR
    hub.mkdir(parents=True)
    (hub / "latest").write_bytes(latest)
    (hub / "1.json").write_bytes(record)
    toml = root / "node.toml"
    toml.write_text(
        f'hubs = ["{(root / "hub").as_uri()}"]\ntrusted_public_keys = ["fuzz-1:AAAA"]\n'
        f'state_dir = "{root / "state"}"\nstore_root = "{root / "store"}"\n'
    )
    bundle = root / "bundle"
    bundle.mkdir()
    config = bundle / "config.json"
    config.write_text(json.dumps(spec_with(annotations)))
    before = config.read_bytes()
    log = root / "runc.log"
    argv = ["--log", str(log), "--log-format", "json", "create", "--bundle", str(bundle), "c1"]

    def exec_runc(*args, **kwargs):
        raise ExecRunc

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(node.ENV_VAR, str(toml))
        mp.setattr(node, "CACHE_DIR", str(root / "node-config-cache"))
        mp.setattr(runc, "_exec_runc", exec_runc)
        try:
            runc.main(argv)
        except ExecRunc:
            after = config.read_bytes()
            if after != before:  # rewritten: as a whole, the environment read-only
                spec = json.loads(after)
                mounts = {m["destination"]: m for m in spec["mounts"]}
                assert "ro" in mounts[ENV_MOUNT]["options"]
                assert STORE_MOUNT in mounts
            assert not log.exists() or '"error"' not in log.read_text()
            note("runc exec'd, config.json " + ("rewritten" if after != before else "kept"))
            return
        except SystemExit as e:
            assert e.code == 1
    assert config.read_bytes() == before, "a failed create left config.json changed"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[-1]["level"] == "error" and lines[-1]["msg"].startswith("floxk: "), lines
    assert "internal error" not in lines[-1]["msg"], lines[-1]["msg"]
    note("failed: " + lines[-1]["msg"].replace(str(root), "ROOT")[:50])


def note(outcome: str) -> None:
    """What became of an example, for `--hypothesis-show-statistics`."""
    if currently_in_test_context():
        event(outcome)


REFS = st.sampled_from([f"{OWNER}/{NAME}", f"{OWNER}/{NAME}:1"])


@st.composite
def pod_annotations(draw) -> dict:
    """Mostly a plain flox pod naming the hub's environment; else annotations of any shape."""
    extra = draw(st.one_of(st.just({}), st.just({}), ANNOTATIONS))
    ref = extra[ENV] if ENV in extra and draw(st.booleans()) else draw(REFS)
    return {**extra, ENV: ref, runc._CONTAINER_TYPE: "container"}


RECORDS = st.one_of(
    served_records(),
    st.sampled_from(S.LOCKS).map(lambda lock: json.dumps(good_record(lock)).encode()),
)


@settings(max_examples=S.budget(30))
@given(annotations=pod_annotations(), latest=LATEST, record=RECORDS)
def test_create_with_whatever_the_hub_serves(annotations, latest, record):
    with tempfile.TemporaryDirectory() as d:
        create(Path(d), annotations, latest, record)


def test_found_internal_errors_stay_out_of_the_create_path(tmp_path):
    """Each hub-side crash found by test_hub.py ended here as "floxk: internal error"."""
    for i, (latest, record) in enumerate(
        [
            (b"\xff", b"{}"),
            (b"1", b"[" * 100_000),
            (
                b"1",
                json.dumps(good_record({"lockfile-version": 1}))
                .replace("1}", '1, "x": "\\ud800"}')
                .encode(),
            ),
        ]
    ):
        root = tmp_path / str(i)
        root.mkdir()
        create(root, {ENV: f"{OWNER}/{NAME}", runc._CONTAINER_TYPE: "container"}, latest, record)
    assert os.listdir(tmp_path)
