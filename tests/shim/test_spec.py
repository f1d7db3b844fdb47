"""The OCI spec rewrite: mounts, env, args; pure apart from looking at the env tree."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from shim.core.annotations import parse_annotations
from shim.core.errors import RealizeError
from shim.core.node import NodeConfig, Policy
from shim.core.spec import ENV_MOUNT, rewrite_spec


def _spec(args=("hello", "-g", "hi"), env=None, mounts=()):
    return {
        "ociVersion": "1.0.2",
        "process": {
            "args": list(args),
            "env": env or ["PATH=/usr/bin:/bin", "HOSTNAME=pod", "GREETING=from-pod"],
            "cwd": "/work",
        },
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}, *mounts],
        "annotations": {"flox.dev/environment": "acme/tools:2"},
    }


def _env(tmp_path: Path, *, hook=None, profile=None, mode=None, with_sh=True):
    tree = tmp_path / "state" / "envs" / "d1g3st"
    (tree / "bin").mkdir(parents=True)
    if with_sh:
        (tree / "bin" / "sh").symlink_to("/nix/store/aaaa-busybox/bin/sh")
    activation = {
        "digest": "d1g3st",
        "system": "x86_64-linux",
        "vars": {"GREETING": "from-manifest", "COLOR": "blue"},
        "hook": hook,
        "profile": profile,
        "activate_mode": mode,
        "packages": [],
        "closure": [],
    }
    (tree / "activation.json").write_text(json.dumps(activation))
    return SimpleNamespace(digest="d1g3st", path=tree, activation=activation)


def _envmap(spec):
    return dict(e.split("=", 1) for e in spec["process"]["env"])


# store_view off: the whole store at /nix/store, nothing written to the state dir
# (the view's tests below give their nodes a temp state dir).
NODE = NodeConfig(store_root=Path("/srv/store"), state_dir=Path("/srv/state"), store_view=False)


def test_mounts_env_and_args_without_hook(tmp_path):
    env = _env(tmp_path)
    original = _spec()
    before = json.dumps(original, sort_keys=True)
    new = rewrite_spec(original, env, NODE, parse_annotations(original["annotations"]))
    assert json.dumps(original, sort_keys=True) == before, "input spec must not be mutated"
    mounts = {m["destination"]: m for m in new["mounts"]}
    assert mounts["/nix/store"]["source"] == "/srv/store/nix/store"
    assert mounts["/nix/store"]["options"] == ["rbind", "ro", "nosuid", "nodev"]
    assert mounts[ENV_MOUNT]["source"] == str(env.path)
    assert "ro" in mounts[ENV_MOUNT]["options"]
    assert new["mounts"][0]["destination"] == "/proc"
    e = _envmap(new)
    assert e["PATH"] == f"{ENV_MOUNT}/bin:{ENV_MOUNT}/sbin:/usr/bin:/bin"
    assert e["FLOX_ENV"] == ENV_MOUNT
    assert e["FLOX_ENV_DESCRIPTION"] == "tools"
    assert e["FLOX_ENV_PROJECT"] == "/work"
    assert e["COLOR"] == "blue"
    assert e["GREETING"] == "from-pod", "a variable set in the pod spec wins over [vars]"
    assert e["FLOX_ACTIVATE_MODE"] == "run" and "CPATH" not in e
    assert new["process"]["args"] == ["hello", "-g", "hi"], "PID 1 stays the pod's command"


def test_hook_and_profile_run_in_env_shell_then_exec(tmp_path):
    env = _env(tmp_path, hook="export HOOKED=1", profile='echo "profile ran"\n')
    spec = _spec()
    new = rewrite_spec(spec, env, NODE, parse_annotations(spec["annotations"]))
    args = new["process"]["args"]
    assert args[:2] == [f"{ENV_MOUNT}/bin/sh", "-c"]
    assert args[2] == 'export HOOKED=1\necho "profile ran"\nexec "$@"'
    assert args[3:] == ["sh", "hello", "-g", "hi"]


def test_hook_without_shell_is_a_clear_error(tmp_path):
    env = _env(tmp_path, hook="echo hi", with_sh=False)
    spec = _spec()
    with pytest.raises(RealizeError) as e:
        rewrite_spec(spec, env, NODE, parse_annotations(spec["annotations"]))
    assert "bin/sh" in e.value.message and "[install]" in e.value.hint


def test_dev_mode_from_manifest_or_annotation(tmp_path):
    spec = _spec()
    new = rewrite_spec(
        spec, _env(tmp_path, mode="dev"), NODE, parse_annotations(spec["annotations"])
    )
    e = _envmap(new)
    assert e["FLOX_ACTIVATE_MODE"] == "dev"
    assert e["CPATH"] == f"{ENV_MOUNT}/include"
    assert e["PKG_CONFIG_PATH"].startswith(f"{ENV_MOUNT}/lib/pkgconfig:")
    # The annotation overrides the manifest's mode.
    ann = parse_annotations({**spec["annotations"], "flox.dev/activate-mode": "run"})
    e2 = _envmap(rewrite_spec(spec, _env(tmp_path / "b", mode="dev"), NODE, ann))
    assert e2["FLOX_ACTIVATE_MODE"] == "run" and "CPATH" not in e2


def test_nix_mutable_needs_policy_and_annotation(tmp_path):
    spec = _spec()
    mutable = parse_annotations({**spec["annotations"], "flox.dev/nix-mutable": "true"})
    with pytest.raises(RealizeError) as e:
        rewrite_spec(spec, _env(tmp_path), NODE, mutable)
    assert "allow_nix_mutable" in e.value.hint
    open_node = NodeConfig(
        store_root=Path("/srv/store"),
        state_dir=tmp_path / "state",
        policy=Policy(allow_nix_mutable=True),
    )
    new = rewrite_spec(spec, _env(tmp_path / "b"), open_node, mutable)
    store = next(m for m in new["mounts"] if m["destination"] == "/nix/store")
    assert "rw" in store["options"] and "nosuid" in store["options"]
    # Policy alone does not make the store writable.
    plain = parse_annotations(spec["annotations"])
    new = rewrite_spec(spec, _env(tmp_path / "c"), open_node, plain)
    store = next(m for m in new["mounts"] if m["destination"] == "/nix/store")
    assert "ro" in store["options"]


@pytest.mark.parametrize(
    "dest",
    [
        "/nix/store", "/nix/store/x", "/run/floxk/env", "/run/floxk/",
        # attack 5: spellings runc resolves to the same place (os.path.normpath keeps "//")
        "//nix/store", "nix/store", "//run/floxk/env", "///nix//store/", "run/floxk",
        "/tmp/../nix/store", "./nix/./store", "/nix/store/.",
    ],
)  # fmt: skip
def test_pod_volume_over_floxk_mounts_is_refused(tmp_path, dest):
    spec = _spec(mounts=[{"destination": dest, "type": "bind", "source": "/host"}])
    with pytest.raises(RealizeError):
        rewrite_spec(spec, _env(tmp_path), NODE, parse_annotations(spec["annotations"]))


def test_no_path_in_spec_gets_the_default_after_env_bin(tmp_path):
    spec = _spec(env=["HOSTNAME=x"])
    new = rewrite_spec(spec, _env(tmp_path), NODE, parse_annotations(spec["annotations"]))
    assert _envmap(new)["PATH"].startswith(f"{ENV_MOUNT}/bin:{ENV_MOUNT}/sbin:/usr/local/sbin")


@pytest.mark.parametrize(
    ("dest", "where"),
    [("//nix/store", "/nix/store"), ("nix/store", "/nix/store"), ("/a//b/../c/", "/a/c"),
     ("", "/"), ("//", "/"), ("/nix/storex", "/nix/storex")],
)  # fmt: skip
def test_mount_destination_is_resolved_like_runc(dest, where):
    from shim.core.spec import mount_destination

    assert mount_destination(dest) == where


@pytest.mark.parametrize("dest", ["/nix/storex", "/run/floxkx", "/data", "nix"])
def test_volumes_next_to_floxk_mounts_are_fine(tmp_path, dest):
    spec = _spec(mounts=[{"destination": dest, "type": "bind", "source": "/host"}])
    new = rewrite_spec(spec, _env(tmp_path), NODE, parse_annotations(spec["annotations"]))
    assert any(m["destination"] == dest for m in new["mounts"])
