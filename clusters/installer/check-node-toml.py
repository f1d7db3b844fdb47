"""Check the operator's node.toml on the node before it replaces the one in use (stdlib).

Run by node.sh with the node's python3 and the new floxk-node zipapp first on sys.path:
    python3 -I -S check-node-toml.py ZIPAPP NODE_TOML
Exit 0 when the file would work here; otherwise exit 1 with one line per problem on
stderr: keys and types as floxk-runc reads them (shim.core.node), then what only this node can
tell: URL schemes, file:// hubs and caches that do not exist here, malformed signing keys.
"""

from __future__ import annotations

import base64
import os
import sys
import urllib.parse


def problems(path: str) -> list[str]:
    from shim.core.errors import FloxkError
    from shim.core.node import parse_node_config

    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        cfg = parse_node_config(text, source="node.toml")
    except FloxkError as e:
        return [e.message]
    out = []
    for key, urls, schemes in (
        ("hubs", cfg.hubs, ("file", "http", "https")),
        ("substituters", cfg.substituters, None),  # Nix knows more stores (s3, ssh ...)
    ):
        for i, url in enumerate(urls):
            u = urllib.parse.urlsplit(url)
            if schemes and u.scheme not in schemes:
                out.append(f"node.toml: {key}[{i}] {url!r} is not file://, http:// or https://")
            elif u.scheme == "file" and not os.path.isdir(urllib.parse.unquote(u.path)):
                out.append(f"node.toml: {key}[{i}] {url}: no such directory on this node")
    for i, key in enumerate(cfg.trusted_public_keys):
        name, _, b64 = key.partition(":")
        try:
            ok = bool(name) and len(base64.b64decode(b64, validate=True)) == 32
        except ValueError:
            ok = False
        if not ok:
            out.append(
                f"node.toml: trusted_public_keys[{i}] {key!r} is not NAME:BASE64 of an ed25519 "
                "public key (as `nix-store --generate-binary-cache-key` writes it)"
            )
    return out


def main() -> None:
    zipapp, path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, zipapp)
    found = problems(path)
    for p in found:
        print(p, file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
