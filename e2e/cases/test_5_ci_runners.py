"""CI runners: a job pod of the shape GitLab's Kubernetes executor makes under Flox's runner
configuration (docs/ci-runners.md), driven the way the runner drives it.

The pod: runtimeClassName flox, the stub image for the build container, the runner's
annotations (`flox.dev/skip-containers: init-permissions,helper`,
`flox.dev/skip-containers-exec: build`, `flox.dev/activate-mode: dev`) plus the job's
`flox.dev/environment`; the runner's init container `init-permissions` and its `helper` on a
real image (skip-listed: they run unmodified); `build` and `helper` each a shell reading
stdin; emptyDir volumes for the builds dir, the scripts and the logs. The job: the helper
checks the sources out and writes the step script (`kubectl exec -i` a script into it); the
build container runs the step script the way the current runner does (its command line
written to the build shell's stdin through the pod's attach endpoint, output to the log
file the helper reads back), and in the legacy exec strategy (`kubectl exec -i ... -- sh`
with the script on stdin) in a pod whose build container is not exec-skipped.
"""

from __future__ import annotations

import time

import pytest

from e2e import kit

ENV_ROOT = "/run/floxk/env"
ACTIVATE_MODE = "flox.dev/activate-mode"
JOB = "42-7"  # GitLab names the per-job dirs after the project and job ids
BUILDS, SCRIPTS, LOGS = "/builds", f"/scripts-{JOB}", f"/logs-{JOB}"
LOG = f"{LOGS}/output.log"
# The runner's config.toml pod_annotations (Flox's GitLab CI page).
RUNNER_ANNOTATIONS = {
    kit.SKIP_CONTAINERS: "init-permissions,helper",
    kit.SKIP_CONTAINERS_EXEC: "build",
    ACTIVATE_MODE: "dev",
}
# The job's `script:` lines, as the runner renders them into the step script.
STEP_SCRIPT = f"""set -e
echo "FLOX_ENV=$FLOX_ENV"
echo "FLOX_ACTIVATE_MODE=$FLOX_ACTIVATE_MODE"
echo "CPATH=$CPATH"
echo "GREETING=$GREETING"
cd {BUILDS}/project
cat README
hello
"""
# get_sources, run in the helper: a checkout, and the step script into the scripts volume.
GET_SOURCES = f"""set -e
echo "helper FLOX_ENV=[$FLOX_ENV] PATH=$PATH"
mkdir -p {BUILDS}/project
echo "checked out by the helper" > {BUILDS}/project/README
cat > {SCRIPTS}/step_script <<'STEP'
{STEP_SCRIPT}STEP
cat {LOGS}/init-permissions
"""


def job_pod(name: str, env_ref: str, helper_image: str, annotations: dict[str, str]):
    mounts = [
        {"name": "repo", "mountPath": BUILDS},
        {"name": "scripts", "mountPath": SCRIPTS},
        {"name": "logs", "mountPath": LOGS},
    ]
    # The runner's shells: stdin open, no TTY (its attach strategy writes to stdin).
    shell = {"stdin": True, "tty": False, "volumeMounts": mounts}
    init = kit.image_container("init-permissions", helper_image, ["/bin/sh", "-c",
                               f'touch {LOG} && chmod 777 {LOGS} {LOG} {BUILDS} && '
                               f'echo "init FLOX_ENV=[$FLOX_ENV]" > {LOGS}/init-permissions'],
                               volumeMounts=mounts)  # fmt: skip
    return kit.flox_pod(
        name,
        env_ref,
        containers=[
            {"name": "build", "command": ["sh"], **shell},  # the stub image: sh is the env's
            kit.image_container("helper", helper_image, ["/bin/sh"], **shell),
        ],  # fmt: skip
        annotations={**annotations},
        spec={
            "initContainers": [init],
            "volumes": [{"name": v, "emptyDir": {}} for v in ("repo", "scripts", "logs")],
        },
    )


def kubectl_stdin(cluster: kit.Cluster, stdin: str, *args: str):
    """kubectl with input on stdin (`kubectl exec -i`, as the runner streams a script)."""
    return cluster.kubectl(*args, input=stdin)


def attach_write(cluster: kit.Cluster, pod: str, container: str, line: str) -> None:
    """Write one command line to a container's stdin through pods/attach (the runner's
    attach strategy: stdin only, no output streams)."""
    from kubernetes.stream import stream

    ws = stream(
        cluster.core.connect_get_namespaced_pod_attach,
        pod,
        cluster.namespace,
        container=container,
        stdin=True,
        stdout=False,
        stderr=False,
        tty=False,
        _preload_content=False,
    )
    try:
        ws.write_stdin(line)
        ws.update(timeout=1)
    finally:
        ws.close()


def read_log(cluster: kit.Cluster, pod: str, *, timeout: float = 90) -> str:
    """The job log, read back through the helper until the step has written its exit code."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        r = kit.exec_in(cluster, pod, "/bin/cat", LOG, container="helper")
        text = r.stdout
        if "exit=" in text:
            return text
        time.sleep(1)
    raise AssertionError(f"the step did not finish in {timeout:g} s; log so far: {text!r}")


def assert_job_output(log: str) -> None:
    lines = log.splitlines()
    assert f"FLOX_ENV={ENV_ROOT}" in lines, f"the job did not run in the environment: {log}"
    assert "FLOX_ACTIVATE_MODE=dev" in lines, f"not in dev mode: {log}"
    assert any(line.startswith(f"CPATH={ENV_ROOT}/include") for line in lines), log
    assert "GREETING=hi from the environment" in lines, log
    assert "checked out by the helper" in lines, f"the helper's checkout is missing: {log}"
    assert "hello from floxk" in lines, f"`hello` did not come from the environment: {log}"


@pytest.fixture
def helper_image(toolbox) -> str:
    return toolbox  # a real image with its own shell, like gitlab-runner-helper


def start_job(cluster, name: str, env_ref: str, helper_image: str, annotations) -> kit.Outcome:
    o = kit.start_pod(cluster, job_pod(name, env_ref, helper_image, annotations))
    assert kit.ready(o.state), o.why()
    sources = kubectl_stdin(
        cluster, GET_SOURCES, "exec", "-i", name, "-c", "helper", "--", "/bin/sh"
    )
    assert sources.returncode == 0, f"get_sources in the helper failed: {sources.stderr.strip()}"
    # The runner's helper and init container run unmodified: the image's PATH, no environment.
    assert "helper FLOX_ENV=[] PATH=/bin" in sources.stdout, sources.stdout
    assert "init FLOX_ENV=[]" in sources.stdout, sources.stdout
    return o


def test_gitlab_runner_job_attach_strategy(cluster, basic_env, helper_image):
    """A GitLab runner job (Flox's runner config) runs its step in the environment, dev mode."""
    # Attach strategy: the step's command line goes to the build shell's stdin, so the step
    # is that shell's child and inherits the environment; execs there are skipped.
    name = "e2e-ci-job"
    start_job(cluster, name, basic_env.ref, helper_image, RUNNER_ANNOTATIONS)
    attach_write(
        cluster, name, "build", f'{{ sh {SCRIPTS}/step_script; echo "exit=$?"; }} >> {LOG} 2>&1\n'
    )
    log = read_log(cluster, name)
    assert "exit=0" in log.splitlines(), f"the step failed: {log}"
    assert_job_output(log)
    # skip-containers-exec: build is honoured: an exec there gets none of the environment.
    r = kit.exec_in(cluster, name, f"{ENV_ROOT}/bin/env", container="build")
    assert r.returncode == 0, r.stderr
    assert "FLOX_ENV" not in kit.env_of(r.stdout), f"skip-containers-exec ignored: {r.stdout}"


def test_gitlab_runner_job_legacy_exec_strategy(cluster, basic_env, helper_image):
    """A GitLab runner job in the legacy exec strategy runs its step in the environment."""
    # The runner execs `sh` into the build container with the script on stdin: the build
    # container must not be exec-skipped (floxk's exec only adds the variables).
    name = "e2e-ci-job-exec"
    annotations = {k: v for k, v in RUNNER_ANNOTATIONS.items() if k != kit.SKIP_CONTAINERS_EXEC}
    start_job(cluster, name, basic_env.ref, helper_image, annotations)
    r = kubectl_stdin(cluster, f"sh {SCRIPTS}/step_script\n", "exec", "-i", name, "-c", "build",
                      "--", "sh")  # fmt: skip
    assert r.returncode == 0, f"the step failed ({r.returncode}): {r.stdout}{r.stderr}"
    assert_job_output(r.stdout)
