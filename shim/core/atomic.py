"""Replace a file atomically: readers see the old or the new content, whole. Standard library only.

Not tempfile: it imports random, hashlib and shutil, milliseconds on every container create.
The temporary name carries the process id, which no other live process has; a leftover of
a dead process with the same id is simply overwritten.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def write_atomic(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` next to `path` and rename it over `path`, with permissions `mode`.

    No fsync: callers write files that do not outlive a crash of the node (a container's
    spec, a use record), and the rename alone makes the swap atomic.
    """
    # os.path, not pathlib: this runs on every container create (see shim.core.node).
    head, name = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
