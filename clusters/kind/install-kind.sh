#!/usr/bin/env bash
# Puts the kind CLI (Debian's package, from $KIND_SUITE) in the cache and,
# when no kind is on PATH, links it as /usr/local/bin/kind so floxk finds it.
# Prints the path of the kind binary.
source "$(dirname "$0")/lib.sh"

out=$CACHE/debs-$KIND_SUITE-$(key "$KIND_SUITE" kind)
fetch_kind() { fetch_debs "$KIND_SUITE" "$OUT/root" kind; }
cached "$out" fetch_kind
bin=$out/root/usr/bin/kind
if ! command -v kind >/dev/null; then
  ln -sf "$bin" /usr/local/bin/kind
  say "linked /usr/local/bin/kind -> $("$bin" version)"
fi
echo "$bin"
