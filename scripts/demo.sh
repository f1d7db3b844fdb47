#!/usr/bin/env bash
# The main job until `floxk up` lands (issue 4): publish an environment built from the
# test catalog to a signed binary cache + hub, realize it the way a node does (signatures
# checked, separate store root), and run a program from it with only that store visible.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${FLOXK_DEMO_DIR:-$(mktemp -d -t floxk-demo.XXXXXX)}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
source scripts/hello-env.sh

step "test catalog (packages built by Nix with a static busybox) in $work/catalog"
catalog=$(test_catalog "$work/catalog")

step "floxk env init + a manifest that installs hello and sets a var and a hook"
rm -rf "$work/env"
floxk env init "$work/env"
hello_manifest "$work/env" $'[hook]\non-activate = \'echo "hook ran; GREETING=$GREETING"\''

step "floxk env lock (resolves and builds with Nix)"
floxk env lock "$work/env" --catalog "$catalog"

step "a signing key pair and floxk env push to a signed file:// cache"
if [ ! -f "$work/key.sec" ]; then
  nix-store --option build-users-group "" --generate-binary-cache-key floxk-demo-1 "$work/key.sec" "$work/key.pub"
fi
floxk env push "$work/env" --to "file://$work/cache" --name demo/hello --signing-key "$work/key.sec"

step "floxk env show demo/hello (from the hub)"
floxk env show demo/hello --hub "file://$work/cache"

step "floxk env realize demo/hello into a separate store root, signatures checked"
tree=$(floxk env realize demo/hello --hub "file://$work/cache" --trusted-key "$(cat "$work/key.pub")" \
  --store "$work/node-store" --state-dir "$work/node-state")
echo "$tree"

step "run hello from the environment tree, with only the node's store mounted on /nix/store"
unshare -m sh -c 'mount --bind "$1/nix/store" /nix/store && PATH="$2/bin" "$2/bin/hello"' \
  sh "$work/node-store" "$tree"
