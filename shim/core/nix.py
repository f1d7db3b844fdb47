"""How floxk calls Nix: command lines shared by lock, push, realize and gc.

Standard library only. Every call goes through shim.core.proc.run; this module only builds
argument lists and reads Nix's output. Options are passed per call (`--option NAME VALUE`),
never written to nix.conf, so a node's own Nix configuration is left alone.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shim.core import storedb
from shim.core.errors import CommandError, MissingDependencyError, NixError
from shim.core.proc import run, run_captured
from shim.core.storedb import is_store_path

# "copying path '/nix/store/...' from 'file:///cache'..." (Nix 2.8 .. 2.3x, on stderr).
_COPIED_FROM = re.compile(r"copying path '(/nix/store/[^']+)' from '([^']+)'")


def option(name: str, value: str) -> list[str]:
    return ["--option", name, value]


def base_options() -> list[str]:
    """Options every call needs on this host.

    Root without a `nixbld` group (a bare Debian nix-bin, a kind node) cannot build or even
    open the store with the default build-users-group; building as root is what a
    single-user install does anyway.
    """
    if os.geteuid() == 0 and not _group_exists("nixbld"):
        return option("build-users-group", "")
    return []


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def store_args(store_root: str | Path | None) -> list[str]:
    """`--store ROOT` for a chroot store (files under ROOT/nix/store), nothing for the host's."""
    return ["--store", str(store_root)] if store_root is not None else []


def substitution_options(
    substituters: Sequence[str],
    trusted_keys: Sequence[str],
    *,
    check_signatures: bool = True,
    private_cache: bool = False,
) -> list[str]:
    """Use exactly these caches and keys, nothing from nix.conf, and no stale narinfo cache.

    Nix remembers narinfo lookups (missing ones for an hour by default) in ~/.cache; a path
    pushed a minute ago must not look missing, and one signed again since must not keep
    its old signatures, so both TTLs are 0 here. The positive TTL also bounds Nix's
    in-memory cache: at 0 one `nix-store --realise` asks for every narinfo five times
    (serially, for the most part). `private_cache`: the call's ~/.cache is its own
    (substitute() gives it a temporary XDG_CACHE_HOME), so found narinfos are kept for the
    call and gone after it.
    """
    return [
        *option("substituters", " ".join(substituters)),
        *option("trusted-public-keys", " ".join(trusted_keys)),
        *option("require-sigs", "true" if check_signatures else "false"),
        *option("narinfo-cache-negative-ttl", "0"),
        *option("narinfo-cache-positive-ttl", "3600" if private_cache else "0"),
        *option("connect-timeout", "15"),
    ]


def credentials(access, substituters: Sequence[str]):
    """A context giving the Nix options for the tokens of private caches among
    `substituters` (shim.core.auth.netrc_options: a private netrc file for the call); [] for
    public caches. The command line names the file, never a token."""
    if access is None:
        return contextlib.nullcontext([])
    from shim.core.auth import netrc_options

    return netrc_options(access, substituters)


def node_options(*, substitution_jobs: int = 0) -> list[str]:
    """What every Nix call of a node's realization adds: the node never builds.

    max-jobs 0 and no builders make a derivation that reaches the node an error instead
    of a build (as root, possibly unsandboxed); no fallback to building when a
    substitution fails; no secret key files (Nix would trust their public halves).

    `substitution_jobs`: for substitute() only. Nix 2.8 counts substitutions against
    max-jobs (max-jobs 0 fetches one path at a time; max-substitution-jobs came later), so
    that call raises max-jobs, and no derivation can reach it: substitute() takes plain
    store paths only (nix-store --realise builds nothing else), and `system` names no
    platform, so a derivation that got there anyway could not build on this machine.
    """
    jobs = [*option("max-jobs", "0")]
    if substitution_jobs:
        jobs = [
            *option("max-jobs", str(substitution_jobs)),
            *option("system", "floxk-nodes-never-build"),
            *option("extra-platforms", ""),
        ]
    return [
        *jobs,
        *option("builders", ""),
        *option("fallback", "false"),
        *option("secret-key-files", ""),
        *option("experimental-features", "nix-command"),
    ]


# Paths one substitution call fetches at once (downloads and unpacks, as containerd pulls
# an image's layers a few at a time).
SUBSTITUTION_JOBS = 8
# A store path as Nix names one: 32 characters of Nix's base32, a dash, a name of
# [A-Za-z0-9+-._?=]. Anything else (a "drv!out" output syntax) is not substituted.
_PLAIN_STORE_PATH = re.compile(r"/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+")


def substitute(
    paths: Sequence[str],
    *,
    substituters: Sequence[str],
    trusted_keys: Sequence[str],
    check_signatures: bool = True,
    store_root: str | Path | None,
    extra: Sequence[str] = (),
    what: str,
) -> str:
    """Fetch `paths` and their closures from `substituters` into the store (Nix checks the
    signatures of input-addressed paths; content-addressed ones: verified_closure()), up to
    SUBSTITUTION_JOBS paths at once. Returns Nix's progress (stderr: copied_from() reads
    it). `extra`: more options (a private cache's netrc). NixError when it fails; a
    derivation or anything but a plain store path is refused before Nix runs: nodes never
    build."""
    import tempfile

    for path in paths:
        if not _PLAIN_STORE_PATH.fullmatch(path) or path.endswith(".drv"):
            raise NixError(
                f"{what} failed: {path} is not an output store path "
                "(a derivation, or not a store path): nodes never build",
                hint="lock and push the environment again (`floxk env push` uploads built outputs)",
            )
    with tempfile.TemporaryDirectory(prefix="floxk-nix-cache-") as cache:
        env = node_env()
        env["XDG_CACHE_HOME"] = cache  # narinfos Nix finds stay with this call
        argv = [
            "nix-store", *base_options(),
            *node_options(substitution_jobs=SUBSTITUTION_JOBS), *store_args(store_root),
            *substitution_options(
                substituters, trusted_keys, check_signatures=check_signatures,
                private_cache=True,
            ),
            *extra, "--realise", *paths,
        ]  # fmt: skip
        _, progress = run_nix_with_log(argv, what=what, env=env)
    return progress


def node_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a node's Nix calls: no nix.conf but floxk's own options.

    The host's /etc/nix/nix.conf, the user's nix.conf files and NIX_CONFIG could add
    substituters, trusted keys, builders or secret keys: none of them is read. NIX_CONF_DIR
    names a directory that cannot exist (below /dev/null), so Nix finds no nix.conf.
    """
    env = dict(os.environ if base is None else base)
    env.pop("NIX_CONFIG", None)
    env["NIX_CONF_DIR"] = "/dev/null/floxk-no-nix-conf"
    env["NIX_USER_CONF_FILES"] = ""
    return env


def no_substituters() -> list[str]:
    """For local builds and evaluation: never reach out to a cache configured in nix.conf."""
    return option("substituters", "")


def copied_from(output: str) -> list[tuple[str, str]]:
    """(store path, substituter) for each path Nix reports it copied in from a cache."""
    return _COPIED_FROM.findall(output)


def nix_string(value: str) -> str:
    """A Nix string literal for `value` (JSON escapes are Nix escapes, plus `${`)."""
    return json.dumps(value).replace("${", "\\${")


def run_nix(
    argv: Sequence[str],
    *,
    what: str,
    hint: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a Nix command; a failure becomes a NixError saying what floxk was doing.

    Returns stdout; Nix's progress (stderr) is kept in the error when it fails.
    """
    try:
        return run(list(argv), timeout=timeout, hint=hint, env=env)
    except CommandError as e:
        raise NixError(f"{what} failed:\n{output_tail(e.output)}", hint=hint) from None


def run_nix_with_log(
    argv: Sequence[str],
    *,
    what: str,
    hint: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Like run_nix, but also returns stderr (where Nix reports copied paths)."""
    argv = [os.fspath(a) for a in argv]
    try:
        proc = run_captured(argv, env=env)
    except FileNotFoundError:
        raise MissingDependencyError(
            f"{argv[0]} is not installed", hint="install Nix (Debian: nix-bin)"
        ) from None
    if proc.returncode != 0:
        raise NixError(f"{what} failed:\n{output_tail(proc.stdout + proc.stderr)}", hint=hint)
    return proc.stdout, proc.stderr


def output_tail(output: str, lines: int = 25) -> str:
    """The last `lines` lines of a Nix call's output, without its build-users-group noise."""
    kept = [
        line
        for line in output.strip().splitlines()
        if "specified in 'build-users-group'" not in line
    ]
    return "\n".join(kept[-lines:])


def closure(paths: Iterable[str], *, store_root: Path | None) -> list[str]:
    """All store paths `paths` need at run time (nix-store -qR), sorted.

    Reads the store's database directly when it can (a few ms instead of another Nix
    process on every cold realization); falls back to `nix-store -qR` if that fails.
    """
    paths = sorted(set(paths))
    if not paths:
        return []
    found = storedb.closure(paths, store_root)
    if found is not None:
        return found
    out = run_nix(
        ["nix-store", *base_options(), *store_args(store_root), "--query", "--requisites", *paths],
        what="computing the closure",
    )
    return sorted(line for line in out.splitlines() if line)


def invalid_paths(paths: Iterable[str], *, store_root: Path | None) -> list[str]:
    """The subset of `paths` that is not valid (present and registered) in the store.

    Read from the store's database when it can (push and lock ask on every call), else
    from `nix-store --check-validity`."""
    paths = list(paths)
    if not paths:
        return []
    valid = storedb.valid_paths(sorted(set(paths)), store_root)
    if valid is not None:
        return [p for p in paths if p not in valid]
    out = run_nix(
        [
            "nix-store",
            *base_options(),
            *store_args(store_root),
            "--check-validity",
            "--print-invalid",
            *paths,
        ],
        what="checking store paths",
    )
    return [line for line in out.splitlines() if line]


def gcroots_dir(store_root: Path | None) -> Path:
    """Where the store's GC looks for roots (symlinks to logical /nix/store paths)."""
    return (store_root or Path("/")) / "nix" / "var" / "nix" / "gcroots"


def path_infos(
    paths: Sequence[str], *, store_root: str | Path | None, env: Mapping[str, str] | None = None
) -> dict[str, dict]:
    """{path: info} for the closure of `paths`: narHash, narSize, references, signatures,
    what `nix path-info --json --sigs --recursive` prints. Read from the store's database
    when it can (one Nix process fewer on every cold realization and record), else from
    Nix (< 2.19 prints a list of infos with a "path" key, later versions an object)."""
    found = storedb.path_infos(sorted(set(paths)), store_root)
    if found is not None:
        return found
    out = run_nix(
        [
            "nix",
            *base_options(),
            *node_options(),
            *store_args(store_root),
            "path-info",
            "--json",
            "--sigs",
            "--recursive",
            *paths,
        ],  # fmt: skip
        what="reading the store's path infos",
        env=node_env() if env is None else env,
    )
    data = json.loads(out)
    items = data.items() if isinstance(data, dict) else ((i.get("path"), i) for i in data)
    infos = {}
    for path, info in items:
        if not isinstance(info, dict) or not is_store_path(str(path)):
            raise NixError(f"nix path-info gave no valid info for {path}")
        infos[path] = {**info, "path": path}
    missing = set(paths) - set(infos)
    if missing:
        raise NixError(f"not in the store after substitution: {', '.join(sorted(missing))}")
    return infos


def delete_paths(paths: Iterable[str], *, store_root: str | Path | None) -> None:
    """Best effort `nix-store --delete` (a path something still references stays)."""
    for path in paths:
        run_captured(
            ["nix-store", *base_options(), *store_args(store_root), "--delete", path],
            env=node_env(),
        )
