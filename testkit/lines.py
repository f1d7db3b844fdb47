"""The containerd and runc lines the tests run on: which are pinned, where each is installed.

One place for tests/cri (the CRI matrix) and tests/install (configs of every line):
- containerd 1.6/1.7/2.1 from Debian (scripts/install-containerd.sh, its `pins`) and 2.2/2.3/
  2.4 built from the Go module proxy (scripts/install-go-lines.sh, `--print` lists them), all
  under <cache>/containerd/<X.Y.Z>/bin/{containerd,containerd-shim-runc-v2,ctr};
- runc: Debian's (the host's, installed by scripts/install-system.sh) and 1.4/1.5 from the Go
  module proxy, each alone in <cache>/runc/<X.Y.Z>/ (runc >= 1.2 re-executes itself through an
  overlay of its own directory: runcs must not share one or be bind-mounted over each other).

FLOXK_CRI_RUNC=<X.Y.Z> picks the runc under test (unset: Debian's).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from shim.core import containerd as ctrd
from testkit.layout import Below

REPO = Path(__file__).resolve().parents[1]
DEBIAN_SCRIPT = REPO / "scripts" / "install-containerd.sh"
GO_SCRIPT = REPO / "scripts" / "install-go-lines.sh"
INSTALL_HINT = "run scripts/install-containerd.sh and scripts/install-go-lines.sh"
# Where dpkg puts Debian's runc package (scripts/install-system.sh installs it).
DEBIAN_RUNC = "/usr/sbin/runc"
RUNC_ENV = "FLOXK_CRI_RUNC"
# runc >= 1.2 is tested on the containerd lines that ship with it (2.3 LTS and newer).
NEW_RUNC_FROM = (2, 3)


def cache_dir() -> Path:
    """The floxk cache: ${FLOXK_CACHE:-$HOME/.cache/floxk}."""
    return Path(os.environ.get("FLOXK_CACHE") or Path.home() / ".cache" / "floxk")


@dataclass(frozen=True)
class Line:
    """One installed containerd line."""

    version: str  # "2.1.9"
    bin_dir: Path  # holds containerd, containerd-shim-runc-v2, ctr

    @property
    def major(self) -> int:
        return ctrd.parse_version(self.version)[0]

    containerd = Below("bin_dir", "containerd")
    ctr = Below("bin_dir", "ctr")
    runc_shim = Below("bin_dir", "containerd-shim-runc-v2")


@dataclass(frozen=True)
class Runc:
    """One installed runc."""

    version: str  # "1.4.4"
    path: Path


def installed_lines() -> list[Line]:
    """The containerd lines installed under <cache>/containerd, oldest first."""
    root = cache_dir() / "containerd"
    lines = [
        Line(version=d.name, bin_dir=d / "bin")
        for d in (root.iterdir() if root.is_dir() else [])
        if (d / "bin" / "containerd").is_file()
    ]
    return sorted(lines, key=lambda line: ctrd.parse_version(line.version))


@cache
def _runc_version(path: str) -> str | None:
    """X.Y.Z from `runc --version` ("runc version 1.1.5+ds1" -> "1.1.5"), None if it fails."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    m = re.search(r"^runc version (\d+\.\d+\.\d+)", out.stdout, re.MULTILINE)
    return m.group(1) if m else None


def debian_runc() -> Runc | None:
    """The host's Debian runc, None if it is not installed."""
    version = _runc_version(DEBIAN_RUNC)
    return Runc(version, Path(DEBIAN_RUNC)) if version else None


def installed_runcs() -> list[Runc]:
    """Debian's runc and those under <cache>/runc/<X.Y.Z>/runc, oldest first."""
    root = cache_dir() / "runc"
    found = [
        Runc(d.name, d / "runc")
        for d in (root.iterdir() if root.is_dir() else [])
        if (d / "runc").is_file() and os.access(d / "runc", os.X_OK)
    ]
    debian = debian_runc()
    if debian and all(r.version != debian.version for r in found):
        found.append(debian)
    return sorted(found, key=lambda r: ctrd.parse_version(r.version))


def runc_under_test() -> Runc:
    """The runc FLOXK_CRI_RUNC names (X.Y.Z), else Debian's; LookupError with the fix."""
    wanted = os.environ.get(RUNC_ENV)
    if not wanted:
        debian = debian_runc()
        if debian is None:
            raise LookupError(f"no runc at {DEBIAN_RUNC}: run scripts/install-system.sh")
        return debian
    for r in installed_runcs():
        if r.version == wanted:
            return r
    have = ", ".join(r.version for r in installed_runcs()) or "none"
    raise LookupError(f"{RUNC_ENV}={wanted} is not installed (have {have}): {INSTALL_HINT}")


# --- what is pinned (the install scripts are the source) ------------------------------------


def debian_pins(script: Path = DEBIAN_SCRIPT) -> list[str]:
    """The X.Y.Z versions pinned in install-containerd.sh (lines like `"1.7.24 trixie ..."`)."""
    return re.findall(r'^\s*"(\d+\.\d+\.\d+) \S+ \S+"\s*$', script.read_text(), re.MULTILINE)


@cache
def go_pins(script: Path = GO_SCRIPT) -> dict[str, list[str]]:
    """{"containerd": [...], "runc": [...]} from `install-go-lines.sh --print`."""
    out = subprocess.run(
        ["bash", str(script), "--print"], check=True, capture_output=True, text=True
    ).stdout
    pins: dict[str, list[str]] = {"containerd": [], "runc": []}
    for line in out.splitlines():
        name, _, version = line.partition(" ")
        pins[name].append(version)
    return pins


def pinned_lines() -> list[str]:
    """Every containerd line the tests expect, oldest first."""
    return sorted(debian_pins() + go_pins()["containerd"], key=ctrd.parse_version)


def matrix() -> list[tuple[str, str]]:
    """The (containerd, runc) pairs of the CRI matrix: every line with Debian's runc, and the
    lines from NEW_RUNC_FROM on also with each runc built from the Go module proxy."""
    debian = debian_runc()
    base = debian.version if debian else "debian"
    pairs = [(c, base) for c in pinned_lines()]
    for c in pinned_lines():
        if ctrd.parse_version(c)[:2] >= NEW_RUNC_FROM:
            pairs += [(c, r) for r in go_pins()["runc"]]
    return sorted(pairs, key=lambda p: (ctrd.parse_version(p[0]), p[1] != base, p[1]))
