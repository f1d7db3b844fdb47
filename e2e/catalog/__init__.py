"""floxk's test catalog: a flake with no inputs whose packages are built with static busybox.

Packages (legacyPackages.<system>.* and packages.<system>.*):
  busybox   bin/busybox + one symlink per applet (sh, httpd, ...)
  hello     bin/hello, a busybox-sh script printing "hello from floxk" (closure: + busybox)
  greeting  bin/hello printing "greetings from greeting" (clashes with hello) and bin/greet
  web       bin/web-serve: busybox httpd in the foreground on $PORT (default 8080)
  app0..app31  bin/app<i>, a busybox-sh script printing its revision (prepare's app_revision)
  python3, pyapp0..pyapp31   only when prepare() is given a runtime (testkit/closures.py):
            the host's python3 as ~20 store paths, and small applications sharing it

The flake needs the static busybox binary beside it (static/busybox), which is not in git:
prepare() copies the flake and the host's busybox into a directory usable as a `path:` flake.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shim.core.errors import MissingDependencyError

HERE = Path(__file__).resolve().parent
FILES = ("flake.nix", "packages.nix")
PACKAGES = ("busybox", "hello", "greeting", "web")
DEFAULT_BUSYBOX = "/bin/busybox"


def prepare(
    dest: Path,
    *,
    busybox: str | os.PathLike[str] = DEFAULT_BUSYBOX,
    runtime: Path | None = None,
    app_revision: str | None = None,
) -> str:
    """Copy the catalog into `dest` with busybox beside it; return its flake ref (path:DEST).

    `busybox` must be a statically linked busybox (Debian: busybox-static), because its
    outputs run on an empty root filesystem. `runtime`: a directory from
    testkit.closures.gather_python_runtime, linked in as the python3 packages' sources;
    `app_revision` changes the app<i> and pyapp<i> packages' code (an application update).
    """
    source = Path(busybox)
    if not source.is_file():
        raise MissingDependencyError(
            f"static busybox not found at {source}",
            hint="install Debian's busybox-static (scripts/install-system.sh)",
        )
    with open(source, "rb") as f:
        head = f.read(4096)
    if head[:4] != b"\x7fELF" or b"ld-linux" in head:  # a dynamic one names its loader
        raise MissingDependencyError(
            f"{source} is not a static busybox", hint="install Debian's busybox-static"
        )
    dest = Path(dest)
    (dest / "static").mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(HERE / name, dest / name)
    shutil.copyfile(source, dest / "static" / "busybox")
    os.chmod(dest / "static" / "busybox", 0o555)
    if runtime is not None:
        shutil.copytree(runtime, dest / "runtime", symlinks=True, dirs_exist_ok=True)
    if app_revision is not None:
        (dest / "app-revision").write_text(app_revision + "\n")
    return f"path:{dest.resolve()}"
