"""Kubernetes manifests the CLI and cluster tests apply, written as a user writes them (YAML
text: the tests read it back with its lines)."""

from __future__ import annotations

import textwrap


def workload(kind: str, name: str, pod_spec: str, *, app: str | None = None,
             replicas: int | None = None, annotations: str = "", head: str = "") -> str:  # fmt: skip
    """An apps/v1 workload (Deployment, StatefulSet, DaemonSet) `name` whose selector matches
    its pod template's label {app: APP} (APP: `name` unless given). POD_SPEC: the template's
    spec, YAML lines as under `spec:` (indented here); ANNOTATIONS: the template's, flow
    YAML; HEAD: lines of the workload's spec before replicas (e.g. a serviceName)."""
    app = app or name
    replicas_line = "" if replicas is None else f"  replicas: {replicas}\n"
    annotations_line = f"      annotations: {annotations}\n" if annotations else ""
    return (
        f"apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n"
        f"{head}{replicas_line}  selector: {{matchLabels: {{app: {app}}}}}\n"
        f"  template:\n    metadata:\n      labels: {{app: {app}}}\n{annotations_line}"
        "    spec:\n" + textwrap.indent(pod_spec, "      ")
    )


def service(name: str, ports: str, *, spec: str = "") -> str:
    """A v1 Service `name` selecting the pods labelled {app: NAME}. PORTS: flow YAML; SPEC:
    more lines of its spec (e.g. a type)."""
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        f"  selector: {{app: {name}}}\n  ports: {ports}\n"
    )
