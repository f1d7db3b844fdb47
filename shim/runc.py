"""floxk-runc: the runc interposer (containerd's runc-v2 `BinaryName`).

`create`/`run` of a container whose spec carries flox.dev/environment: realize the
environment, rewrite config.json atomically, then exec the real runc with the
original argv. `exec` with a process.json: add the environment's variables to it.
`delete`: release the container's use of its environment. Everything else, and every
container that is a sandbox, has no environment or is skip-listed: exec the real
runc at once. The fast path normally never reaches Python: see shim/front.py.

A failure is written to runc's --log file as runc would write it (containerd reads
the last error line into the CRI error, so it reaches the pod's events) and to
stderr; config.json is then byte-identical to what containerd wrote.

Every import costs milliseconds on every container start, so modules are imported where
they are needed: a create that is not ours (normally filtered out by the sh front already)
reads config.json and execs runc having loaded little more than json and node.toml, and a
create on an environment the node has realized before reads the hub's pointer, the record
it verified before (state_dir/records/: trusted by its store path, no Nix call), the
generation mark and the tree's activation.json without importing the lock model, Nix or
subprocess (benchmarks/createpath.py and benchmarks/podstart.py measure it).
"""

from __future__ import annotations

import os
import sys

from shim.core import fastjson
from shim.core.records import factory, record

TYPE_CHECKING = False  # typing costs milliseconds at every start; only type checkers need it
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

    from shim.core.annotations import EnvRef, FloxAnnotations
    from shim.core.node import NodeConfig

# The two annotation keys that decide whether a create is ours (shim.core.annotations.ENVIRONMENT
# and CRI_CONTAINER_TYPE), spelled out so a pass-through create never imports that module.
_ENVIRONMENT = "flox.dev/environment"
_CONTAINER_TYPE = "io.kubernetes.cri.container-type"

# runc's global flags that take a value (urfave/cli accepts -x, --x, --x=v, -x=v).
GLOBAL_VALUE_FLAGS = {"root", "log", "log-format", "criu", "rootless"}
# Value flags of the subcommands we act on.
SUB_VALUE_FLAGS = {
    "bundle", "b", "console-socket", "pid-file", "preserve-fds",
    "cwd", "env", "e", "user", "u", "additional-gids", "g", "process", "p",
    "process-label", "apparmor", "cap", "c", "cgroup",
}  # fmt: skip
ACTED_ON = ("create", "run", "exec", "delete")


@record
class RuncCall:
    argv: list[str]  # as received, without argv[0]
    globals: dict[str, str | bool] = factory(dict)
    subcommand: str | None = None
    flags: dict[str, str | bool] = factory(dict)
    container_id: str | None = None

    @property
    def log_path(self) -> str | None:
        v = self.globals.get("log")
        return v if isinstance(v, str) else None

    @property
    def log_format(self) -> str:
        v = self.globals.get("log-format")
        return v if isinstance(v, str) else "text"

    @property
    def bundle(self) -> str:
        # A str, not a Path: no pathlib import on the create path (it costs milliseconds).
        b = self.flags.get("bundle", self.flags.get("b"))
        return b if isinstance(b, str) and b else os.getcwd()

    @property
    def process_file(self) -> str | None:
        p = self.flags.get("process", self.flags.get("p"))
        return p if isinstance(p, str) else None


def parse_argv(argv: list[str]) -> RuncCall:
    """Split runc's argv into global flags, subcommand, its flags and the container id."""
    call = RuncCall(argv=list(argv))
    it = iter(argv)
    target, value_flags = call.globals, GLOBAL_VALUE_FLAGS
    for tok in it:
        if tok == "--":
            continue
        if tok.startswith("-") and tok != "-":
            # One or two dashes, as Go's flag package reads them: "---x" names no flag of
            # ours (runc refuses it), so its neighbour is never taken as a value.
            name, eq, val = (tok[2:] if tok.startswith("--") else tok[1:]).partition("=")
            if eq:
                target[name] = val
            elif name in value_flags:
                target[name] = next(it, "")
            else:
                target[name] = True
            continue
        if call.subcommand is None:
            call.subcommand = tok
            target, value_flags = call.flags, SUB_VALUE_FLAGS
            continue
        call.container_id = tok
        break
    return call


def main(argv: list[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    call = parse_argv(args)
    if call.subcommand not in ACTED_ON:
        _exec_runc(None, args)
    spec = None
    if call.subcommand in ("create", "run"):
        # Every pod's sandbox and every plain container is created through here: decide
        # from the spec alone, before importing anything the rewrite needs.
        spec = read_spec(call)
        if spec is None or not _is_flox_container(spec.get("annotations") or {}):
            _exec_runc(None, args, call)
    node, failure = act(call, spec)
    if failure is not None:
        _fail(call, failure)
    _exec_runc(node, args)


def act(call: RuncCall, spec: dict | None) -> tuple[NodeConfig | None, str | None]:
    """floxk's work for a create (`spec`: its config.json), exec or delete: (the node's
    config, None) when runc may run, or (config, the message to fail the call with)."""
    from shim.core.errors import FloxkError
    from shim.core.node import load_node_config

    node: NodeConfig | None = None
    try:
        node = load_node_config()
        if spec is not None:
            prepare_create(call, node, spec)
        elif call.subcommand == "exec":
            prepare_exec(call, node)
        else:
            release(call, node)
    except FloxkError as e:
        return node, f"floxk: {e}"
    except Exception as e:  # any bug must still reach the pod's events
        return node, f"floxk: internal error: {type(e).__name__}: {e}"
    return node, None


_SERVED = False  # set in the create server's children (served_create)


def served_create(args: list[str]) -> str:
    """main() for a create the node's create server runs for a front (shim.server): the
    same decisions, answered as one line instead of exec'ing runc: `ok` (the front execs
    its runc), `fail MESSAGE` (already in runc's log, for the front's stderr) or
    `fallback`."""
    global _SERVED
    _SERVED = True
    call = parse_argv(args)
    if call.subcommand not in ("create", "run"):
        return "fallback"
    spec = read_spec(call)
    if spec is not None and _is_flox_container(spec.get("annotations") or {}):
        _, failure = act(call, spec)
        if failure is not None:
            _log_line(call, "error", failure)
            return "fail " + " ".join(failure.split("\n"))
    return "ok"


def read_spec(call: RuncCall) -> dict | None:
    """B/config.json as a dict; None when missing or broken (runc reports that itself)."""
    try:
        with open(os.path.join(call.bundle, "config.json"), "rb") as f:
            spec = fastjson.loads(f.read())
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None


def prepare_create(call: RuncCall, node: NodeConfig, spec: dict | None = None) -> None:
    """Rewrite B/config.json for a flox container; leave it alone for everything else.

    `spec`: config.json as main() already read it (read here when None)."""
    config = os.path.join(call.bundle, "config.json")
    if spec is None:
        spec = read_spec(call)
        if spec is None:
            return  # not ours to judge: runc reports a missing or broken spec itself
    flox = _flox_annotations(spec, exec_=False)
    if flox is None:
        return
    parsed, ref = flox
    if parsed.ignored:
        _log_line(call, "warning", f"floxk: ignored annotations (not on the allow-list): "
                  f"{', '.join(parsed.ignored)}")  # fmt: skip
    from time import monotonic

    from shim.core import gc, stats
    from shim.core.service import fetch_for, realize_deadline, realize_record
    from shim.core.spec import check_volumes

    check_volumes(list(spec.get("mounts") or []))  # a spec floxk refuses realizes nothing

    access = None
    if node.credentials:  # private hubs: this pod's token, from its own mounts (shim.core.auth)
        from shim.core.auth import access_for

        access = access_for(node, spec)
    cid = call.container_id or ""
    start = monotonic()
    with realize_deadline(ref, node) as limit:
        found = fetch_for(ref, node, access=access)
        limit.digest(found.digest)
        resolved = monotonic()
        # Mark the use before realizing (shim.core.gc's contract): gc never frees a tree between
        # its realization and this container's start.
        gc.mark_in_use(node.state_dir, found.digest, cid, call.bundle)
        try:
            from shim.core.realize import file_lock, find_ready

            # A GC that saw no user just before the mark may be removing this tree (and its
            # store view) right now. It holds the digest's lock until it is done, and every GC
            # looks for users under that lock: once we have held it, the tree stays.
            with file_lock(f"{node.state_dir}/locks/{found.digest}.lock"):
                pass
            env = find_ready(node.state_dir, found.digest)
            cold = env is None
            if cold:
                env = realize_record(found, node, access=access)
        except BaseException:
            gc.release(node.state_dir, cid)
            raise
    realized = monotonic()
    try:
        from shim.core.spec import rewrite_spec

        write_json_atomic(config, rewrite_spec(spec, env, node, parsed))
    except BaseException:
        gc.release(node.state_dir, cid)
        raise
    ms = {
        "resolve": round((resolved - start) * 1000, 1),
        "realize": round((realized - resolved) * 1000, 1),
        "rewrite": stats.ms_since(realized),
    }
    from shim import __version__

    served = {"served": True} if _SERVED else {}  # by the node's create server
    stats.emit(node.log_path, "create", env=str(ref), digest=found.digest,
               container=cid, cold=cold, ms=ms, floxk=__version__, **served)  # fmt: skip


def prepare_exec(call: RuncCall, node: NodeConfig) -> None:
    """Give an exec'd process (process.json) the environment its container was created with."""
    if not call.process_file or not call.container_id:
        return  # args on the command line: runc takes the env from config.json (rewritten)
    bundle = _container_bundle(call, node)
    spec = fastjson.loads((bundle / "config.json").read_bytes())
    flox = _flox_annotations(spec, exec_=True)
    if flox is None:
        return
    parsed, ref = flox
    tree = _mounted_env_tree(spec, node)
    if tree is None:
        return  # created without an environment (skip-containers)
    activation = fastjson.loads((tree / "activation.json").read_text())
    from pathlib import Path

    from shim.core.spec import activation_env, activation_mode

    process_path = Path(call.process_file)
    process = fastjson.loads(process_path.read_bytes())
    process["env"] = activation_env(
        list(process.get("env") or []),
        activation,
        mode=activation_mode(activation, parsed),
        description=ref.name,
        project_dir=process.get("cwd") or "/",
        env_tree=tree,
    )
    write_json_atomic(process_path, process)


def release(call: RuncCall, node: NodeConfig) -> None:
    """On delete: drop this container's use of its environment. Never blocks the delete."""
    if not call.container_id:
        return
    try:
        from shim.core import gc

        gc.release(node.state_dir, call.container_id)
    except Exception as e:  # a GC bookkeeping error must not keep a container
        _log_line(call, "warning", f"floxk: could not release {call.container_id}: {e}")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Replace `path` with `data` as JSON, atomically, keeping its permissions.

    No fsync: the rename alone makes the swap atomic for runc and containerd, and a bundle
    does not outlive a crash of the node (containerd recreates its tasks), so waiting for
    the disk would only slow every container start.
    """
    from shim.core.atomic import write_atomic

    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    # One dumps: the C encoder in one go (json.dump streams through Python).
    write_atomic(path, fastjson.dumps(data).encode(), mode)


def _flox_annotations(spec: dict, *, exec_: bool) -> tuple[FloxAnnotations, EnvRef] | None:
    """The pod's flox annotations on a flox container's spec and its environment; None when
    floxk leaves this container alone: not a flox container, or named in the pod's skip
    list for a create (flox.dev/skip-containers) or an exec (`exec_`: ...-exec)."""
    from shim.core import annotations as ann

    annotations = spec.get("annotations") or {}
    if not _is_flox_container(annotations):
        return None
    parsed = ann.parse_annotations(annotations)
    assert parsed.environment is not None  # _is_flox_container(): the annotation is there
    skip = parsed.skip_containers_exec if exec_ else parsed.skip_containers
    if annotations.get(ann.CRI_CONTAINER_NAME) in skip:
        return None
    return parsed, parsed.environment


def _is_flox_container(annotations: dict) -> bool:
    # Not a dict: containerd never writes that, and nothing of ours (runc reports the spec).
    return (
        isinstance(annotations, dict)
        and _ENVIRONMENT in annotations
        and annotations.get(_CONTAINER_TYPE) != "sandbox"
    )


def _container_bundle(call: RuncCall, node: NodeConfig) -> Path:
    from pathlib import Path

    from shim.core.proc import run

    argv = [node.find_runc()]
    for flag in ("root", "rootless"):
        value = call.globals.get(flag)
        if isinstance(value, str):
            argv += [f"--{flag}", value]
    assert call.container_id is not None  # runc exec always names its container
    state = fastjson.loads(run([*argv, "state", call.container_id]))
    return Path(state["bundle"])


def _mounted_env_tree(spec: dict, node: NodeConfig) -> Path | None:
    """The env tree floxk mounted at create, if it lies under this node's state dir."""
    from pathlib import Path

    from shim.core.spec import ENV_MOUNT

    envs = Path(node.state_dir, "envs").resolve()
    for m in spec.get("mounts") or []:
        if m.get("destination") == ENV_MOUNT:
            src = Path(m.get("source", "")).resolve()
            if src.parent == envs:
                return src
    return None


def _exec_runc(node: NodeConfig | None, args: list[str], call: RuncCall | None = None) -> NoReturn:
    """Exec the real runc. With `call` (a create), a failure to find it goes to runc's log
    like any create failure, so it reaches the pod's events."""
    from shim.core.errors import FloxkError
    from shim.core.node import load_node_config

    try:
        runc = (node or load_node_config()).find_runc()
    except FloxkError as e:
        if call is not None:
            _fail(call, f"floxk: {e}")
        sys.stderr.write(f"floxk-runc: {e}\n")
        sys.exit(1)
    os.execv(runc, [runc, *args])


def _fail(call: RuncCall, msg: str) -> NoReturn:
    _log_line(call, "error", msg)
    sys.stderr.write(msg + "\n")
    sys.exit(1)


def _log_line(call: RuncCall, level: str, msg: str) -> None:
    """Append one line to runc's --log file in runc's own format (json or logrus text)."""
    if not call.log_path:
        return
    import time

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if call.log_format == "json":
        line = fastjson.dumps({"level": level, "msg": msg, "time": now})
    else:
        line = f"time={fastjson.dumps(now)} level={level} msg={fastjson.dumps(msg)}"
    try:
        with open(call.log_path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass  # stderr still carries it


if __name__ == "__main__":
    main()
