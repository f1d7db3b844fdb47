"""The merged environment tree: package trees joined into one, like Flox/buildEnv.

shim.core.realize builds it in tmp/ once the closure is substituted and verified
(build_tree), before activation.json makes it visible; tree_link() reads where one of its
entries points. Nothing outside the store is ever read while building it.

Standard library only (runs on nodes); never imported on a warm create.
"""

from __future__ import annotations

import os

from shim.core.errors import RealizeError
from shim.core.realize import ACTIVATION
from shim.core.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

_MAX_SYMLINK_HOPS = 40

# The tree's only links into the store: PACKAGES/<n> -> the n-th installed store path. Every
# other entry is a short relative link through them (`bin/ls -> ../.pkgs/0/bin/ls`), which
# ext4 and tmpfs keep inside the inode (targets under 60 bytes): a tree costs its
# directories, not a 4 KiB block per linked file (busybox alone brings ~270 into bin/).
PACKAGES = ".pkgs"
_RESERVED = {ACTIVATION, PACKAGES}


@record(frozen=True)
class _Source:
    priority: int
    order: int
    install_id: str
    logical: str  # this entry's path under /nix/store, as seen inside a container
    package: int  # index of its installed store path: the tree's PACKAGES/<package>
    inner: str  # the entry's path inside that store path ("" for the path itself)


class _Links:
    """Writes the tree's links: the package links on first use, relative links to them."""

    def __init__(self, dest: Path, packages: list[str]) -> None:
        self.dest, self.packages = dest, packages
        self.made: set[int] = set()

    def link(self, source: _Source, at: Path, depth: int) -> None:
        if source.package not in self.made:
            if not self.made:
                (self.dest / PACKAGES).mkdir()
            os.symlink(self.packages[source.package], self.dest / PACKAGES / str(source.package))
            self.made.add(source.package)
        up = "../" * depth
        os.symlink(f"{up}{PACKAGES}/{source.package}{source.inner}", at)


def build_tree(
    dest: Path, entries: list[tuple[int, int, str, str]], *, store_root: Path | None
) -> None:
    """Merge package trees into dest like Flox/buildEnv: a directory only one package has
    is one symlink; shared directories are real and merged; on a file clash the lower
    priority number wins, and equal priorities are an error unless the files are equal.

    entries: (priority, order, install_id, store path). Every link resolves to a logical
    /nix/store path (through dest/PACKAGES/<n>), so the tree works wherever the store is
    mounted at /nix/store; tree_link() reads where an entry points.

    Nothing outside the store is ever read: symlinks are resolved inside the store only
    (_resolve), and an entry whose symlink leaves the store (e.g. `share -> /etc`) is
    kept as a link, never followed, so inside a container it names the container's own
    file, not the host's.
    """
    sources: list[_Source] = []
    packages: list[str] = []
    for priority, order, install_id, path in entries:
        if _kind(path, store_root) == "dir":
            sources.append(_Source(priority, order, install_id, path, len(packages), ""))
            packages.append(path)
    _merge(dest, sources, store_root, _Links(dest, packages), depth=0)


def tree_link(tree: str | Path, relative: str) -> str:
    """The /nix/store path that the tree's entry `relative` (e.g. "bin/hello") links to.
    Trees built before the package links (every link absolute) are read as well."""
    target = os.readlink(os.path.join(tree, relative))
    if target.startswith("/"):
        return target
    inside = os.path.normpath(os.path.join(os.path.dirname(relative), target))
    top, package, *rest = inside.split("/", 2)
    if top != PACKAGES:
        raise ValueError(f"{relative} in {tree} does not link through {PACKAGES}/: {target}")
    store_path = os.readlink(os.path.join(tree, PACKAGES, package))
    return "/".join([store_path, *rest])


def _merge(
    dest: Path, sources: list[_Source], store_root: Path | None, links: _Links, *, depth: int
) -> None:
    names: dict[str, list[tuple[_Source, str]]] = {}
    for source in sources:
        resolved = _resolve(source.logical, store_root)
        assert resolved is not None  # only "dir" sources are merged
        for name in sorted(os.listdir(_real(resolved, store_root))):
            if depth == 0 and name in _RESERVED:
                continue
            child = _Source(
                source.priority, source.order, source.install_id, f"{source.logical}/{name}",
                source.package, f"{source.inner}/{name}",
            )  # fmt: skip
            names.setdefault(name, []).append((child, _kind(child.logical, store_root)))
    for name, found in sorted(names.items()):
        found.sort(key=lambda item: (item[0].priority, item[0].order))
        best = found[0][0].priority
        winners = [item for item in found if item[0].priority == best]
        if all(kind == "dir" for _, kind in winners):
            dirs = [source for source, kind in found if kind == "dir"]
            if len(dirs) == 1:
                links.link(dirs[0], dest / name, depth)
            else:
                (dest / name).mkdir()
                _merge(dest / name, dirs, store_root, links, depth=depth + 1)
            continue
        _check_clash(winners, store_root)
        links.link(winners[0][0], dest / name, depth)


def _check_clash(winners: list[tuple[_Source, str]], store_root: Path | None) -> None:
    """Equal-priority entries of one name must be the same: the same store file, or regular
    files of equal content in the store. A link out of the store is compared by nothing
    but its logical path (its target is never read)."""
    import filecmp

    first, first_kind = winners[0]
    for other, kind in winners[1:]:
        same = other.logical == first.logical
        if not same and kind == first_kind == "file" and other.install_id != first.install_id:
            a, b = _resolve(first.logical, store_root), _resolve(other.logical, store_root)
            assert a is not None and b is not None  # kind "file": both resolve in the store
            same = a == b or filecmp.cmp(_real(a, store_root), _real(b, store_root), shallow=False)
        if not same:
            relative = first.logical.split("/", 4)[-1]
            raise RealizeError(
                f"packages '{first.install_id}' and '{other.install_id}' both provide "
                f"{relative} with priority {first.priority}",
                hint=f"give one a different priority (lower number wins), e.g. "
                f"{other.install_id}.priority = {first.priority + 1} in [install]",
            )


def _real(logical: str, store_root: Path | None) -> str:
    """Where a logical /nix/store path is on this host (under store_root for chroot stores)."""
    if store_root is None:
        return logical
    return os.path.join(store_root, logical.lstrip("/"))


_STORE_PREFIX = "/nix/store/"


def _resolve(logical: str, store_root: Path | None) -> str | None:
    """`logical` with every symlink resolved, like the kernel would inside a container, but
    confined to the store: None when a link (or `..`) leads out of /nix/store, to the
    store directory itself, or loops. No component outside the store is ever looked at."""
    if not logical.startswith(_STORE_PREFIX):
        return None
    todo = logical[len(_STORE_PREFIX) :].split("/")
    todo.reverse()  # a stack: the next component last
    done: list[str] = []
    hops = 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if not done:
                return None  # above /nix/store
            done.pop()
            continue
        candidate = _STORE_PREFIX + "/".join([*done, name])
        real = _real(candidate, store_root)
        if not os.path.islink(real):
            done.append(name)
            continue
        hops += 1
        if hops > _MAX_SYMLINK_HOPS:
            return None
        target = os.readlink(real)
        if target.startswith("/"):
            if not target.startswith(_STORE_PREFIX):
                return None  # leaves the store: never followed
            done = []
            target = target[len(_STORE_PREFIX) :]
        todo.extend(reversed(target.split("/")))
    return _STORE_PREFIX + "/".join(done) if done else None


def _kind(logical: str, store_root: Path | None) -> str:
    """ "dir" if the path is (or resolves, inside the store, to) a directory; "out" if it
    is a symlink that leaves the store (kept as a link, never followed); else "file"."""
    resolved = _resolve(logical, store_root)
    if resolved is None:
        return "out"
    return "dir" if os.path.isdir(_real(resolved, store_root)) else "file"
