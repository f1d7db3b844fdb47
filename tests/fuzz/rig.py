"""What the argv fuzzers (test_runc_argv, test_shim_argv) build their rigs from: bundle
specs by their annotations, bundle dirs, stand-in programs for what a front execs."""

from __future__ import annotations

import json
from pathlib import Path

ENV = "flox.dev/environment"
TYPE = "io.kubernetes.cri.container-type"


def spec(container_type: str, ref: str | None = None, **annotations: str) -> dict:
    """A config.json of a container of `container_type` (sandbox, container), on the flox
    environment `ref` if given, with further `annotations`."""
    return {"annotations": {**({ENV: ref} if ref else {}), TYPE: container_type, **annotations}}


def write_bundles(root: Path, specs: dict[str, dict | str | None]) -> dict[str, str]:
    """root/KIND for each spec: its config.json as JSON (a dict), as written (a str, e.g. a
    broken one), or none at all (None); {kind: absolute dir}."""
    bundles = {}
    for kind, config in specs.items():
        d = root / kind
        d.mkdir()
        if isinstance(config, dict):
            (d / "config.json").write_text(json.dumps(config))
        elif isinstance(config, str):
            (d / "config.json").write_text(config)
        bundles[kind] = str(d)
    return bundles


def write_stand_in(path: Path, body: str) -> str:
    """An executable /bin/sh script at `path` running `body`; its path."""
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(0o755)
    return str(path)
