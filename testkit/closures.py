"""A closure of the size and shape of a real runtime, for the test catalog (e2e/catalog).

`gather_python_runtime(dest)` copies the host's python3 into `dest` the way the catalog's
Nix expressions package it (e2e/catalog/packages.nix, `python3` and `pyapp<i>`):

  dest/libs/<package>/lib/...    one directory per Debian package that ships a shared
                                 library python3 or one of its extension modules loads
                                 (glibc with the dynamic loader, zlib, OpenSSL, libffi,
                                 sqlite, ncurses, Kerberos, ...): one store path each;
  dest/python/bin/python3.X      the interpreter (dynamically linked, run by the store's
                                 loader with --library-path, so no /lib64 is needed);
  dest/python/lib/python3.X/     the standard library with its lib-dynload extension modules
                                 and compiled __pycache__ (no test suite, no static libpython)

That is what nixpkgs' python3 closure looks like: ~20 store paths, thousands of files, tens
of MB, the interpreter sharing glibc and friends with whatever else a node runs. Tests and
benchmarks pass `dest` to `e2e.catalog.prepare(..., runtime=dest)`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HOST_PYTHON = "/usr/bin/python3"
# Left out, as a slim runtime image leaves them out: the test suite, the static libpython
# and its build config, pip's bundled wheels, 2to3, IDLE/tk.
STDLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3")
STDLIB_SKIP_PREFIX = ("config-", "site-packages", "dist-packages")
LOADER = "ld-linux-x86-64.so.2"


def _ldd(path: str) -> list[str]:
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    found = re.findall(r"=>\s+(/\S+)", out)
    found += re.findall(r"^\s+(/\S*ld-linux\S*)\s", out, re.MULTILINE)
    return found


def _package_of(path: str) -> str:
    """The Debian package that ships `path` (glibc for the loader and libc's siblings)."""
    name = os.path.basename(path)
    if name.startswith(("ld-linux", "libc.", "libm.", "libresolv.", "libpthread.", "libdl.")):
        return "glibc"
    for candidate in (path, os.path.realpath(path), "/usr" + path, path.removeprefix("/usr")):
        proc = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.split(":", 1)[0].strip()
    return re.sub(r"\.so.*$", "", name)


def python_version(python: str = HOST_PYTHON) -> str:
    """ "3.11" for the host's python3."""
    return subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def gather_python_runtime(dest: Path, python: str = HOST_PYTHON) -> Path:
    """Copy the host's python3, its standard library and its shared libraries into `dest`
    (layout in the module docstring); returns dest. Idempotent: an existing dest is kept."""
    dest = Path(dest)
    if (dest / "python").is_dir():
        return dest
    version = python_version(python)
    interpreter = os.path.realpath(python)
    stdlib = Path(f"/usr/lib/python{version}")
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    lib_dest = tmp / "python" / "lib" / f"python{version}"
    (tmp / "python" / "bin").mkdir(parents=True)
    shutil.copy2(interpreter, tmp / "python" / "bin" / f"python{version}")

    def skip(directory: str, names: list[str]) -> list[str]:
        if Path(directory) != stdlib:
            return []
        return [n for n in names if n in STDLIB_SKIP or n.startswith(STDLIB_SKIP_PREFIX)]

    shutil.copytree(stdlib, lib_dest, ignore=skip, symlinks=True)
    # The compiled stdlib a runtime ships (Debian compiles it at install time, outside the
    # package's files), at the three optimization levels as nixpkgs ships it; same sources,
    # same mtimes, so the bytes are the same every time.
    subprocess.run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "-o",
            "0",
            "-o",
            "1",
            "-o",
            "2",
            "-d",
            f"/lib/python{version}",
            ".",
        ],
        cwd=lib_dest,
        capture_output=True,
    )
    libraries = set(_ldd(interpreter))
    for so in (lib_dest / "lib-dynload").glob("*.so"):
        libraries.update(_ldd(str(so)))
    for lib in sorted(libraries):
        package = _package_of(lib)
        target = tmp / "libs" / package / "lib"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), target / os.path.basename(lib))
    (tmp / "python-version").write_text(version + "\n")
    if dest.exists():  # a concurrent gatherer finished first
        shutil.rmtree(tmp)
        return dest
    tmp.rename(dest)
    return dest


def cached_python_runtime(python: str = HOST_PYTHON) -> Path:
    """gather_python_runtime into the floxk cache, keyed by the interpreter's version and
    size (a host upgrade gathers anew)."""
    from testkit.lines import cache_dir

    real = os.path.realpath(python)
    key = f"{python_version(python)}-{os.stat(real).st_size}"
    return gather_python_runtime(cache_dir() / "testkit" / f"python-runtime-{key}", python)


def main() -> int:
    dest = gather_python_runtime(Path(sys.argv[1])) if sys.argv[1:] else cached_python_runtime()
    files = sum(len(f) for _, _, f in os.walk(dest))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and not p.is_symlink())
    print(
        f"{dest}: {files} files, {size / 2**20:.1f} MiB, libs: {sorted(os.listdir(dest / 'libs'))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
