#!/usr/bin/env bash
# The main job, from a fresh machine: a kind cluster whose pods run in Nix environments.
#  1. install floxk, Nix and containerd pieces (scripts/install-system.sh);
#  2. build the offline kind node image (cached: ~20 min cold on 2 cores, ~1 s warm);
#  3. `floxk up` (kind cluster with the flox runtime, RuntimeClass, dev hub);
#  4. an environment from the bundled test catalog: init, lock, push to the dev hub;
#  5. `floxk run pod` runs `hello` from that environment on the empty stub image.
# Idempotent: a second run reuses the image and the cluster and pushes a new generation.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
source scripts/hello-env.sh
work=${FLOXK_QUICKSTART_DIR:-${FLOXK_CACHE:-$HOME/.cache/floxk}/quickstart}
mkdir -p "$work"

step "installing floxk and the host pieces"
bash scripts/install-system.sh
source scripts/lib.sh && venv_activate

step "kind node image (offline, cached)"
base=$(bash clusters/kind/build-image.sh)

step "floxk up (kind cluster 'floxk', context kind-floxk)"
floxk up --provider kind --name floxk --base-image "$base"

step "an environment: hello + busybox from the bundled catalog"
catalog=$(test_catalog "$work/catalog")
hello_manifest "$work/env"
floxk env lock "$work/env" --catalog "$catalog"
floxk env push "$work/env" --name quickstart/hello

step "floxk run pod: hello from the environment, on an empty image"
floxk run pod hello --env quickstart/hello --replace -- hello

cat >&2 <<'TXT'

Next: `floxk run pod NAME --env quickstart/hello -- sh -c 'echo $GREETING'`,
`floxk status`, `floxk e2e --provider existing`, and `floxk down` when done.
TXT
