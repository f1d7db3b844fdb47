"""Single pods: does a pod get its environment, exactly as its annotations say?

Every pod runs on the empty stub image (flox/empty), so any program it runs can only come
from its environment. Each assertion's message carries the pod's state and events.
"""

from __future__ import annotations

import time

from e2e import kit
from e2e.cases.conftest import fresh

ENV_ROOT = "/run/floxk/env"


def test_pod_runs_a_command_from_its_environment(cluster, basic_env):
    """A pod runs a command from its environment."""
    o = kit.run_pod(cluster, kit.flox_pod("e2e-hello", basic_env.ref, ["hello"]))
    assert o.state.phase == "Succeeded", o.why()
    assert "hello from floxk" in o.log, o.why()


def test_vars_and_hook_applied(cluster, basic_env):
    """The environment's vars and its on-activate hook are applied."""
    script = 'echo "GREETING=$GREETING"; echo "HOOKED=$HOOKED"; echo "FLOX_ENV=$FLOX_ENV"'
    o = kit.run_pod(cluster, kit.flox_pod("e2e-vars", basic_env.ref, ["sh", "-c", script]))
    assert o.state.phase == "Succeeded", o.why()
    seen = kit.env_of(o.log)
    assert seen.get("GREETING") == "hi from the environment", f"vars not applied: {o.why()}"
    assert seen.get("HOOKED") == "the hook ran", f"hook did not run: {o.why()}"
    assert seen.get("FLOX_ENV") == ENV_ROOT, o.why()


def test_generation_pin_and_new_push_on_restart(cluster, publish):
    """owner/name:GEN pins a generation; an unpinned pod picks up a new push on restart."""
    name = "e2e/generations"
    first = publish(name, fresh(cluster, {"busybox": "busybox"}).replace("[vars]", _release("one")))
    # Long-running and unpinned: prints RELEASE, exits when told to (restartPolicy Always
    # starts it again; the signal file lives in an emptyDir, which survives the restart).
    script = (
        'rm -f /signal/restart; echo "RELEASE=$RELEASE"; '
        "while [ ! -e /signal/restart ]; do sleep 1; done"
    )
    pod = kit.flox_pod(
        "e2e-unpinned",
        name,
        containers=[
            {
                "name": "main",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "signal", "mountPath": "/signal"}],
            }
        ],
        restart="Always",
        spec={"volumes": [{"name": "signal", "emptyDir": {}}]},
    )
    o = kit.start_pod(cluster, pod)
    assert kit.ready(o.state) and "RELEASE=one" in o.log, o.why()

    second = publish(
        name, fresh(cluster, {"busybox": "busybox"}).replace("[vars]", _release("two"))
    )
    assert second.generation == first.generation + 1, (first, second)
    touch = kit.exec_in(cluster, "e2e-unpinned", f"{ENV_ROOT}/bin/touch", "/signal/restart")
    assert touch.returncode == 0, f"could not signal the pod: {touch.stderr}"
    o = _wait_restarted(cluster, "e2e-unpinned")
    assert "RELEASE=two" in o.log, f"the restarted container kept the old generation: {o.why()}"

    pinned = kit.run_pod(
        cluster, kit.flox_pod("e2e-pinned", first.ref, ["sh", "-c", 'echo "RELEASE=$RELEASE"'])
    )
    assert pinned.state.phase == "Succeeded", pinned.why()
    assert "RELEASE=one" in pinned.log, f"{first.ref} did not pin generation 1: {pinned.why()}"


def _release(value: str) -> str:
    return f'[vars]\nRELEASE = "{value}"'


def _wait_restarted(cluster, name: str, timeout: float = 180) -> kit.Outcome:
    """Until the pod's container restarted once and runs again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = cluster.core.read_namespaced_pod(name, cluster.namespace)
        status = (pod.status.container_statuses or [None])[0]
        if status and status.restart_count >= 1 and status.ready:
            break
        time.sleep(1)
    return kit.outcome(cluster, name)


def test_store_is_read_only(cluster, basic_env):
    """The store and the environment tree are mounted read-only."""
    script = (
        "grep -E ' (/nix/store|/run/floxk/env) ' /proc/mounts; "
        "touch /nix/store/e2e-write 2>/dev/null && echo STORE=writable || echo STORE=refused; "
        f"touch {ENV_ROOT}/e2e-write 2>/dev/null && echo TREE=writable || echo TREE=refused"
    )
    o = kit.run_pod(cluster, kit.flox_pod("e2e-store", basic_env.ref, ["sh", "-c", script]))
    assert o.state.phase == "Succeeded", o.why()
    store, tree = kit.mounts_at(o.log, "/nix/store"), kit.mounts_at(o.log, ENV_ROOT)
    assert store and tree, f"no store/environment mounts: {o.why()}"
    assert all(opts.split(",")[0] == "ro" for opts in store + tree), f"not read-only: {o.log}"
    assert "STORE=refused" in o.log and "TREE=refused" in o.log, o.log


def test_skip_listed_sidecar_runs_unmodified(cluster, basic_env, toolbox):
    """A sidecar named in flox.dev/skip-containers runs unmodified."""
    report = (
        'echo "FLOX_ENV=[$FLOX_ENV]"; echo "PATH=$PATH"; '
        "grep -c ' /nix/store ' /proc/mounts || true"
    )
    pod = kit.flox_pod(
        "e2e-sidecar",
        basic_env.ref,
        containers=[
            {"name": "app", "command": ["sh", "-c", f"{report}; hello"]},
            kit.image_container("sidecar", toolbox, ["/bin/sh", "-c", report]),
        ],
        annotations={kit.SKIP_CONTAINERS: "sidecar"},
    )
    o = kit.run_pod(cluster, pod)
    assert o.state.phase == "Succeeded", o.why()
    app, sidecar = o.logs["app"], o.logs["sidecar"]
    assert f"FLOX_ENV=[{ENV_ROOT}]" in app and "hello from floxk" in app, f"app: {o.why()}"
    assert "FLOX_ENV=[]" in sidecar, f"the sidecar got the environment: {sidecar}"
    assert "PATH=/bin" in sidecar.splitlines(), f"the sidecar's PATH was changed: {sidecar}"
    assert sidecar.strip().splitlines()[-1] == "0", f"the sidecar got a store mount: {sidecar}"


def test_kubectl_exec_gets_the_environment(cluster, basic_env):
    """`kubectl exec` gets the environment (not in a skip-containers-exec container)."""
    announce = 'echo "FLOX_ENV=$FLOX_ENV"; exec sleep 3600'
    pod = kit.flox_pod(
        "e2e-exec",
        basic_env.ref,
        containers=[
            {"name": "app", "command": ["sh", "-c", announce]},
            {"name": "noexec", "command": ["sh", "-c", announce]},
        ],
        annotations={kit.SKIP_CONTAINERS_EXEC: "noexec"},
        restart="Always",
    )
    o = kit.start_pod(cluster, pod)
    assert kit.ready(o.state), o.why()
    assert o.logs["noexec"].strip() == f"FLOX_ENV={ENV_ROOT}", f"main process: {o.why()}"

    inside = kit.exec_in(cluster, "e2e-exec", "env", container="app")
    assert inside.returncode == 0, f"kubectl exec env failed: {inside.stderr.strip()}"
    seen = kit.env_of(inside.stdout)
    assert seen.get("GREETING") == "hi from the environment", f"exec env: {inside.stdout}"
    assert seen.get("FLOX_ENV") == ENV_ROOT, inside.stdout
    assert seen.get("PATH", "").startswith(f"{ENV_ROOT}/bin:"), inside.stdout
    hello = kit.exec_in(cluster, "e2e-exec", "hello", container="app")
    assert "hello from floxk" in hello.stdout, f"exec hello: {hello.stderr.strip()}"

    skipped = kit.exec_in(cluster, "e2e-exec", f"{ENV_ROOT}/bin/env", container="noexec")
    assert skipped.returncode == 0, skipped.stderr
    seen = kit.env_of(skipped.stdout)
    assert "FLOX_ENV" not in seen and "GREETING" not in seen, (
        f"skip-containers-exec ignored: {skipped.stdout}"
    )


def test_bad_ref_fails_with_the_runtime_reason(cluster, basic_env):
    """A bad ref fails with the runtime's reason in the pod's events."""
    bad = {
        "e2e-bad-name": f"e2e/no-such-env-{cluster.run_id}",
        "e2e-bad-gen": f"{basic_env.name}:999999",
    }
    for pod_name, ref in bad.items():
        kit.start(cluster, kit.flox_pod(pod_name, ref, ["hello"]))
    expected = {"e2e-bad-name": "no-such-env", "e2e-bad-gen": "no generation 999999"}
    for pod_name in bad:
        o = kit.wait_for(cluster, pod_name, until=lambda s: s.done)
        messages = [e["message"] for e in o.events]
        assert o.state.phase != "Succeeded" and not o.state.started, o.why()
        ours = [m for m in messages if "floxk:" in m and expected[pod_name] in m]
        assert ours, f"no event with the runtime's reason ({expected[pod_name]}): {o.why()}"


def test_pod_without_annotation_is_untouched(cluster, basic_env, toolbox):
    """A pod without the annotation is untouched (its annotated twin is not)."""
    report = (
        'echo "FLOX_ENV=[$FLOX_ENV]"; echo "PATH=$PATH"; '
        "grep -c ' /nix/store ' /proc/mounts || true"
    )
    container = kit.image_container("main", toolbox, ["/bin/sh", "-c", report])
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "e2e-plain"},
        "spec": {
            "runtimeClassName": "flox",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }
    twin = kit.flox_pod("e2e-twin", basic_env.ref, containers=[dict(container)])
    kit.start(cluster, plain)
    kit.start(cluster, twin)
    o_plain, o_twin = kit.wait_for(cluster, "e2e-plain"), kit.wait_for(cluster, "e2e-twin")
    assert o_twin.state.phase == "Succeeded", o_twin.why()
    assert f"FLOX_ENV=[{ENV_ROOT}]" in o_twin.log, (
        f"the runtime did not act on the annotated twin, so the plain pod proves nothing: "
        f"{o_twin.log.strip()}"
    )
    assert o_plain.state.phase == "Succeeded", o_plain.why()
    lines = o_plain.log.strip().splitlines()
    assert lines == ["FLOX_ENV=[]", "PATH=/bin", "0"], f"the plain pod was changed: {lines}"
