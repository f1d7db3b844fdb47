"""Whether store paths carry a signature by a key the node trusts, checked by Nix itself.

Nix skips the signature check of a content-addressed path (its name derives from its
content, so Nix deems it self-certifying): `nix-store --realise` with require-sigs takes
one unsigned from a cache, and `nix store verify --sigs-needed 1` passes it (Nix 2.8 ..
2.3x). A node must not: what a lock names is only as trustworthy as whoever wrote it.
So the store's own path infos (NAR hash, size, references, signatures: what a signature
covers) are copied into a throwaway binary cache without their content-address claim,
and Nix checks that cache: exactly the node's keys, at least one valid signature each.
Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shim.core.errors import NixError, TrustError
from shim.core.nix import base_options, node_env, node_options, option, output_tail, path_infos
from shim.core.proc import run_captured
from shim.core.storedb import STORE_DIR

_UNTRUSTED = re.compile(r"path '(/nix/store/[^']+)' is untrusted")


def verified_closure(
    paths: Iterable[str],
    trusted_keys: Sequence[str],
    *,
    store_root: str | Path | None,
    substituters: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    access=None,
) -> list[str]:
    """The closure of `paths` (sorted), each path signed by one of `trusted_keys`.

    A path the store holds without such a signature (built or added here before) also
    passes when a substituter's narinfo carries one: the signature covers the NAR hash,
    size and references, which are taken from the store, so it only verifies for exactly
    the content the store has. TrustError names the paths that fail; NixError when Nix
    cannot tell."""
    paths = sorted(set(paths))
    if not paths:
        return []
    if not trusted_keys:
        raise TrustError(
            "no trusted public keys are configured, so no store path can be accepted",
            hint="set trusted_public_keys in the node configuration",
        )
    env = node_env() if env is None else env
    infos = path_infos(paths, store_root=store_root, env=env)
    closure = sorted(infos)
    untrusted = _untrusted(infos, closure, trusted_keys, env)
    if untrusted and substituters:
        remote = {p: _remote_signatures(p, substituters, access) for p in untrusted}
        retry = {p: {**infos[p], "signatures": sigs} for p, sigs in remote.items() if sigs}
        if retry:
            still = set(_untrusted(retry, sorted(retry), trusted_keys, env))
            untrusted = [p for p in untrusted if p not in retry or p in still]
    if not untrusted:
        return closure
    raise TrustError(
        f"{len(untrusted)} store path(s) carry no signature by a key this node trusts: "
        + ", ".join(untrusted[:5])
        + (" ..." if len(untrusted) > 5 else ""),
        hint="publish with `floxk env push --signing-key KEY` and give nodes its public key "
        "(trusted_public_keys); content-addressed paths need a signature too",
        paths=untrusted,
    )


def _untrusted(
    infos: Mapping[str, dict], paths: Sequence[str], keys: Sequence[str], env: Mapping[str, str]
) -> list[str]:
    """The paths among `paths` whose infos carry no valid signature by one of `keys`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="floxk-verify-") as cache:
        _write_narinfo_cache(Path(cache), infos.values())
        argv = [
            "nix", *base_options(), *node_options(),
            *option("trusted-public-keys", " ".join(keys)),
            "store", "verify", "--store", Path(cache).as_uri(),
            "--no-contents", "--sigs-needed", "1", *paths,
        ]  # fmt: skip
        proc = run_captured(argv, env=env)
    if proc.returncode == 0:
        return []
    untrusted = sorted(set(_UNTRUSTED.findall(proc.stderr)))
    if not untrusted:
        raise NixError(f"checking signatures failed:\n{output_tail(proc.stdout + proc.stderr)}")
    return untrusted


def _remote_signatures(path: str, substituters: Sequence[str], access=None) -> list[str]:
    """The Sig lines of `path`'s narinfo in the substituters (unverified: Nix checks them)."""
    from shim.core.hubfetch import _fetch, _join

    sigs: list[str] = []
    for url in substituters:
        try:
            narinfo = os.path.basename(path).split("-", 1)[0] + ".narinfo"
            text = _fetch(_join(url, narinfo), access)
        except Exception:  # noqa: BLE001 - an unreachable cache just offers no signature
            continue
        for line in (text or "").splitlines():
            if line.startswith("Sig: "):
                sigs.append(line[5:].strip())
    return sigs


def _write_narinfo_cache(directory: Path, infos: Iterable[dict]) -> None:
    """A binary cache of narinfos only (no NARs: `--no-contents`), without CA claims."""
    (directory / "nix-cache-info").write_text(f"StoreDir: {STORE_DIR}\n")
    for info in infos:
        path = info["path"]
        refs = " ".join(os.path.basename(r) for r in info.get("references") or [])
        lines = [
            f"StorePath: {path}",
            "URL: nar/none.nar",  # never read
            "Compression: none",
            f"NarHash: {info['narHash']}",
            f"NarSize: {info['narSize']}",
            f"References: {refs}",
            *(f"Sig: {sig}" for sig in info.get("signatures") or info.get("sigs") or []),
        ]
        name = os.path.basename(path).split("-", 1)[0] + ".narinfo"
        (directory / name).write_text("\n".join(lines) + "\n")
