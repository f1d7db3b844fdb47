"""The repository's one atomic writer: readers see the old or the new content, whole.

Standard library only, and on the create path (shim/core/__init__.py): not tempfile, which
imports random, hashlib and shutil, milliseconds on every container create. The temporary
name carries the process id, which no other live process has; a leftover of a dead process
with the same id is simply overwritten. O_NOFOLLOW: a symlink planted at the temporary name
is refused, not written through.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def write_atomic(
    path: str | Path, data: bytes | str, mode: int | None = 0o644, *, durable: bool = False
) -> None:
    """Write `data` (str: UTF-8) next to `path` and rename it over `path`.

    mode: the new file's permissions, exactly (whatever the umask); None keeps those of the
    file it replaces (0o644 for a new one).
    durable: fsync the data before the rename and the directory after it, for files that
    must survive a crash of the machine (configs, locks, packages, records). Off on the
    create path: a container's spec or a use record does not outlive a crash of the node,
    and the rename alone makes the swap atomic.
    """
    # os.path, not pathlib: this runs on every container create.
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode()
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        dir_fd = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
