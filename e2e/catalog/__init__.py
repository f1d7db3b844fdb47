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
prepare() copies the flake and the host's busybox into a directory usable as a `path:` flake
(a runtime is not copied: runtime.json names it as a locked input).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from shim.core.errors import MissingDependencyError

HERE = Path(__file__).resolve().parent
FILES = ("flake.nix", "packages.nix")
PACKAGES = ("busybox", "hello", "greeting", "web")
DEFAULT_BUSYBOX = "/bin/busybox"
RUNTIME_FILE = "runtime.json"  # where prepare() names the runtime (packages.nix reads it)


def runtime_source(runtime: Path) -> dict[str, str]:
    """{"path", "narHash"} of `runtime` for the catalog's `builtins.fetchTree` (a locked
    input of type path), its copy in the host's store made once (Nix's name for it:
    "source"). Computed once per directory and kept beside it (`<dir>.source.json`),
    checked against the store on every call: a garbage-collected copy is added again."""
    runtime = Path(runtime).resolve()
    memo = runtime.with_name(runtime.name + ".source.json")
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if known.get("path") == str(runtime) and known.get("storePath"):
        valid = subprocess.run(
            ["nix-store", "--check-validity", known["storePath"]], capture_output=True
        )
        if valid.returncode == 0:
            return {"path": known["path"], "narHash": known["narHash"]}
    nix = ["nix", "--extra-experimental-features", "nix-command"]
    nar_hash = _out([*nix, "hash", "path", str(runtime)])
    store_path = _out([*nix, "store", "add-path", "--name", "source", str(runtime)])
    known = {"path": str(runtime), "narHash": nar_hash, "storePath": store_path}
    tmp = memo.with_name(f"{memo.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(known) + "\n")
    tmp.rename(memo)
    return {"path": known["path"], "narHash": nar_hash}


def _out(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


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
    testkit.closures.gather_python_runtime, the python3 packages' sources: named in
    runtime.json by its NAR hash and added to the store once (runtime_source), the way a
    real catalog names nixpkgs in its flake.lock, so evaluating the catalog finds it in
    the store instead of copying and hashing tens of MB of sources every time;
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
        (dest / RUNTIME_FILE).write_text(json.dumps(runtime_source(runtime)) + "\n")
    if app_revision is not None:
        (dest / "app-revision").write_text(app_revision + "\n")
    return f"path:{dest.resolve()}"
