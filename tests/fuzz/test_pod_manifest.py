"""The Kubernetes manifests `floxk run pod -f` reads: any file (YAML of every shape, text
edits, bytes) is either one Pod filled in for the flox runtime, or a FloxkError naming the
file or the field; never another exception, and the manifest given is never changed.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from floxk._cluster import pod as pods
from shim.core import hub
from shim.core.errors import FloxkError
from tests.fuzz import strategies as S

BASE_PODS = [
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "hello",
            "namespace": "apps",
            "labels": {"app": "hello"},
            "annotations": {pods.ENV_ANNOTATION: "alice/hello:3"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "command": ["hello"], "env": [{"name": "A", "value": "1"}]}
            ],
            "initContainers": [{"name": "init", "command": ["true"], "image": "busybox:1"}],
        },
    },
    {
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": {pods.ENV_ANNOTATION: "team/web"}},
        "spec": {"containers": [{"name": "web", "image": "flox/empty:1.0.0"}]},
    },
]
KEYS = ["apiVersion", "kind", "metadata", "name", "namespace", "annotations", "spec",
        "containers", "initContainers", "image", "runtimeClassName", pods.ENV_ANNOTATION]  # fmt: skip


def check_filled(pod: dict, given_ref: str | None) -> None:
    """What `floxk run pod` sends to the cluster."""
    assert pod["kind"] == "Pod" and isinstance(pod["apiVersion"], str)
    meta = pod["metadata"]
    assert isinstance(meta["name"], str) and meta["name"]
    assert isinstance(meta["namespace"], str) and meta["namespace"]
    ref = meta["annotations"][pods.ENV_ANNOTATION]
    assert given_ref is None or ref == given_ref
    hub.parse_ref(ref)
    spec = pod["spec"]
    assert isinstance(spec["runtimeClassName"], str)
    assert spec["containers"] and isinstance(spec["containers"], list)
    for c in spec["containers"] + (spec.get("initContainers") or []):
        assert isinstance(c, dict) and isinstance(c["image"], str) and c["image"]


def run_pod_file(raw: bytes, env_ref: str | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "pod.yaml")
        path.write_bytes(raw)
        try:
            manifest = pods.load_manifest(path)
        except FloxkError as e:
            assert str(path) in str(e), e
            return
        kept = copy.deepcopy(manifest)
        try:
            pod = pods.fill_pod(manifest, env_ref=env_ref)
        except FloxkError as e:
            assert any(w in str(e) for w in ("metadata", "spec", "apiVersion", "environment")), e
            assert manifest == kept
            return
        assert manifest == kept
        check_filled(pod, env_ref)


REFS = st.one_of(st.none(), st.sampled_from(["alice/hello", "bob/x:2"]))


@given(st.sampled_from(BASE_PODS).flatmap(lambda p: S.mutated(p, S.JSON, KEYS)), REFS)
def test_pod_manifest_mutated(case, env_ref):
    doc, _ = case
    run_pod_file(yaml.safe_dump(doc).encode(), env_ref)


@example(raw=b"kind: Pod\nmetadata: {name: \xff}\n", env_ref=None)
@example(raw=b"kind: Pod\nmetadata: !!binary aGVsbG8=\n", env_ref=None)
@example(
    raw=b"kind: Pod\nmetadata:\n  name: a\n  annotations: {flox.dev/environment: 5}\n", env_ref=None
)
@example(raw=b"kind: Pod\nmetadata: &m {name: a}\nspec: {containers: [*m]}\n", env_ref=None)
@given(
    st.one_of(
        st.sampled_from(BASE_PODS)
        .map(yaml.safe_dump)
        .flatmap(lambda t: S.text_edits(t, ":-[]{}&*!|>'\"# \n,?a1"))
        .map(str.encode),
        st.binary(max_size=120),
    ),
    REFS,
)
def test_pod_manifest_text(raw, env_ref):
    run_pod_file(raw, env_ref)


# --- found by the properties above ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, field",
    [
        ("kind: Pod\nmetadata: [a]\n", "metadata"),
        ("kind: Pod\nmetadata: {name: a, annotations: [x]}\n", "metadata.annotations"),
        (
            "kind: Pod\nmetadata: {name: a, annotations: {flox.dev/environment: 5}}\nspec: {containers: [{}]}\n",
            "flox.dev/environment",
        ),
        ("kind: Pod\nmetadata: {name: a}\nspec: x\n", "spec"),
        ("kind: Pod\nmetadata: {name: a}\nspec: {containers: {a: 1}}\n", "spec.containers"),
        ("kind: Pod\nmetadata: {name: a}\nspec: {containers: [x]}\n", "spec.containers"),
        (
            "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{}], initContainers: 1}\n",
            "spec.initContainers",
        ),
        ("kind: Pod\nmetadata: {name: [a]}\nspec: {containers: [{}]}\n", "metadata.name"),
        (
            "kind: Pod\nmetadata: {name: a, namespace: 5}\nspec: {containers: [{}]}\n",
            "metadata.namespace",
        ),
    ],
)
def test_found_pod_fields_of_the_wrong_type(tmp_path, text, field):
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    with pytest.raises(FloxkError, match=field.replace(".", r"\.")):
        pods.fill_pod(pods.load_manifest(path), env_ref=None if "flox.dev" in text else "a/b")


@pytest.mark.parametrize("raw", [b"kind: Pod\n# caf\xe9\n", b"[" * 1500])
def test_found_unreadable_pod_file(tmp_path, raw):
    path = tmp_path / "pod.yaml"
    path.write_bytes(raw)
    with pytest.raises(FloxkError, match=str(path)):
        pods.load_manifest(path)
