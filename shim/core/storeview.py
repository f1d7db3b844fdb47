"""What a flox container sees at /nix/store: its environment's closure only (the store view).

    state_dir/views/<digest>/
      store/       one entry per path of the closure: an empty directory for a directory,
                   an empty file for a file, the link itself for a symlink. Bound read-only
                   at /nix/store, it is the container's store directory.
      binds.json   the closure's names bound over their entry, read-only (all but symlinks)

A view is built once per environment tree and shared by every pod of it: in tmp/, binds.json
last, then renamed into views/ (complete once visible, like a tree: a half-made view is
never used). GC removes it with its tree (shim.core.gc). Nothing is mounted on the host: the view
is a directory of mount points, and the container's runc makes the mounts in the
container's own mount namespace, which exec'd processes join, so they see the same.

store_mounts() is the one function that says which mounts make a container's /nix/store;
every path that writes a create's spec calls it. node.toml `store_view = false` (or a pod
allowed to write the store, nix-mutable) gives the whole store instead, as before.

Standard library only; imported on every flox create, so no pathlib, json or re.
"""

from __future__ import annotations

import os
import stat  # loaded by os already

from shim.core import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim.core.node import NodeConfig

VIEWS = "views"
SKELETON = "store"
BINDS = "binds.json"
STORE_PREFIX = "/nix/store/"


def view_path(state_dir: str, digest: str) -> str:
    return os.path.join(state_dir, VIEWS, digest)


def store_mounts(node: NodeConfig, env, *, writable: bool = False) -> list[dict]:
    """The OCI mounts that make /nix/store for a container of `env` (a RealizedEnv: .digest,
    .activation): the view (built here when the tree has none yet), or, with store_view off
    or a writable store, the node's whole store."""
    from shim.core.spec import STORE_MOUNT, bind_mount

    if writable or not node.store_view:
        return [bind_mount(node.store_dir, STORE_MOUNT, readonly=not writable)]
    view, names = ensure_view(node, env.digest, env.activation.get("closure") or [])
    store = node.store_dir
    mounts = [bind_mount(os.path.join(view, SKELETON), STORE_MOUNT, readonly=True)]
    for name in names:
        mounts.append(
            bind_mount(os.path.join(store, name), STORE_MOUNT + "/" + name, readonly=True)
        )
    return mounts


def ensure_view(node: NodeConfig, digest: str, closure: list[str]) -> tuple[str, list[str]]:
    """(the view's directory, the names to bind) for the tree `digest`, building the view
    under the digest's lock when it does not exist yet (the first create or prefetch of a
    tree, and trees realized before views existed)."""
    view = view_path(node.state_dir, digest)
    names = _read_binds(view)
    if names is not None:
        return view, names
    from shim.core.realize import file_lock

    with file_lock(os.path.join(node.state_dir, "locks", f"{digest}.lock")):
        names = _read_binds(view)  # another create may have built it meanwhile
        if names is None:
            names = _build(node, digest, closure, view)
    return view, names


def _read_binds(view: str) -> list[str] | None:
    try:
        with open(os.path.join(view, BINDS), "rb") as f:
            names = fastjson.loads(f.read())
    except (OSError, ValueError):
        return None
    return names if isinstance(names, list) else None


def _build(node: NodeConfig, digest: str, closure: list[str], view: str) -> list[str]:
    """Make the view in tmp/ and rename it into views/ (the digest's lock held)."""
    import shutil
    import tempfile

    from shim.core.errors import RealizeError

    tmp = os.path.join(node.state_dir, "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(os.path.dirname(view), exist_ok=True)
    building = tempfile.mkdtemp(dir=tmp, prefix=f"{digest}.view.")
    try:
        skeleton = os.path.join(building, SKELETON)
        os.mkdir(skeleton, 0o755)
        names = []
        for path in closure:
            name = path[len(STORE_PREFIX) :] if isinstance(path, str) else ""
            if not path.startswith(STORE_PREFIX) or not name or "/" in name or name[0] == ".":
                raise RealizeError(
                    f"the environment tree {digest} lists {path!r} in its closure, which is "
                    "not a store path",
                    hint="remove the tree with `floxk-node gc`; the next pod realizes it again",
                )
            real = os.path.join(node.store_dir, name)
            entry = os.path.join(skeleton, name)
            try:
                mode = os.lstat(real).st_mode
            except FileNotFoundError:
                raise RealizeError(
                    f"{path} of environment {digest} is missing from the store {node.store_dir}",
                    hint="remove the tree with `floxk-node gc`; the next pod realizes it again",
                ) from None
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(real), entry)  # followed inside the view
                continue
            if stat.S_ISDIR(mode):
                os.mkdir(entry, 0o555)
            else:
                os.close(os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
            names.append(name)
        with open(os.path.join(building, BINDS), "w") as f:
            f.write(fastjson.dumps(names))
        os.chmod(building, 0o755)
        if os.path.lexists(view):  # damaged (no binds.json): ours to replace, lock held
            shutil.rmtree(view, ignore_errors=True)
        os.rename(building, view)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return names


def remove(state_dir: str, digest: str) -> None:
    """Take the view out of views/ in one rename, then delete it (shim.core.gc, with its tree;
    the digest's lock held)."""
    import shutil
    import tempfile

    view = view_path(state_dir, digest)
    if not os.path.lexists(view):
        return
    tmp = os.path.join(state_dir, "tmp")
    os.makedirs(tmp, exist_ok=True)
    trash = tempfile.mkdtemp(dir=tmp, prefix=f"gc-{digest}.view.")
    os.rename(view, os.path.join(trash, "view"))
    shutil.rmtree(trash, ignore_errors=True)
