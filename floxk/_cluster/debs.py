"""Debian packages for a node image, fetched on the host so `docker build` needs no network.

The node image adds python3 and Nix (Debian's nix-bin) to a kind node image. Which .debs
that takes depends on what the base already has, so apt resolves against the base image's
own dpkg status file, with a private apt state (the host's packages are never touched) and
the Debian mirror the host's apt already uses, for the base image's release.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from floxk._proc import call
from shim.core.errors import ConfigError

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def installed_packages(dpkg_status: str) -> set[str]:
    """Names of packages dpkg's status file says are installed."""
    installed = set()
    for stanza in dpkg_status.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", stanza, flags=re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            installed.add(fields["Package"])
    return installed


def os_release_codename(os_release: str) -> str:
    """VERSION_CODENAME of an /etc/os-release text (Debian only)."""
    fields = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', os_release, flags=re.M))
    if fields.get("ID") != "debian" or not fields.get("VERSION_CODENAME"):
        raise ConfigError(
            f"the base image is not Debian ({fields.get('PRETTY_NAME', 'no os-release')})",
            hint="floxk node images are built FROM kind's Debian-based kindest/node images",
        )
    return fields["VERSION_CODENAME"]


def host_mirror() -> str:
    """The Debian archive URI the host's apt already uses (never a hard-coded host)."""
    out = call(["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)"]).stdout
    for line in out.splitlines():
        uri, _, release = line.partition(" ")
        # The main archive (not -security, -updates, -backports) serves every release.
        if uri and release and "-" not in release and "security" not in uri:
            return uri.rstrip("/")
    raise ConfigError(
        "the host's apt has no Debian source to fetch node packages from",
        hint="add a Debian source under /etc/apt/sources.list.d and run apt-get update",
    )


def download(
    packages: list[str], *, codename: str, dpkg_status: Path, dest: Path, mirror: str | None = None
) -> list[Path]:
    """Download `packages` and every dependency the base lacks into dest; return the .debs."""
    state = dest / "apt"
    archives = dest / "debs"
    for d in (state / "lists" / "partial", archives / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    sources = state / "sources.list"
    sources.write_text(f"deb [signed-by={KEYRING}] {mirror or host_mirror()} {codename} main\n")
    opts = [
        *("-o", f"Dir::Etc::SourceList={sources}"),
        *("-o", "Dir::Etc::SourceParts=/dev/null"),
        *("-o", f"Dir::State::Lists={state / 'lists'}"),
        *("-o", f"Dir::State::status={dpkg_status}"),
        *("-o", f"Dir::Cache={state / 'cache'}"),
        *("-o", f"Dir::Cache::archives={archives}"),
        *("-o", "Acquire::Languages=none"),
        *("-o", "APT::Sandbox::User=root"),
        *("-o", "Debug::NoLocking=1"),
    ]
    hint = "node packages come from Debian's archive: check the host's apt can reach it"
    call(["apt-get", *opts, "update", "-qq"], hint=hint)
    call(
        ["apt-get", *opts, "install", "-y", "-qq", "--download-only", "--no-install-recommends"]
        + packages,
        hint=hint,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return sorted(archives.glob("*.deb"))


def cached(
    packages: list[str],
    *,
    codename: str,
    dpkg_status: str,
    dest: Path,
    say: Callable[[str], None],
    what: str,
) -> list[Path]:
    """download() once into the cache directory dest, resolved against dpkg_status (the
    text of a status file); `what` is said when it downloads. Made beside dest and renamed
    into place, so a run that stops half way leaves nothing another run would use."""
    if not (dest / ".done").exists():
        say(what)
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "status").write_text(dpkg_status)
        download(packages, codename=codename, dpkg_status=tmp / "status", dest=tmp)
        (tmp / ".done").touch()
        if dest.exists() and not (dest / ".done").exists():
            shutil.rmtree(dest, ignore_errors=True)  # an earlier run's leftovers
        try:
            os.rename(tmp, dest)
        except OSError:  # another run put it there first
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted((dest / "debs").glob("*.deb"))
