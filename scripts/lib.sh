# Sourced by the install scripts. No side effects on load.
# FLOXK_DRY_RUN=1: every helper here says what it would change and changes nothing.

dry_run() { [[ -n "${FLOXK_DRY_RUN:-}" ]]; }

# apt_ensure PKG...: install the Debian packages that are not installed yet (idempotent).
apt_ensure() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if dry_run; then
    echo "would install Debian packages (apt-get install): ${missing[*]}" >&2
    return 0
  fi
  echo "installing Debian packages (apt-get install): ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# nix_conf_ensure [FILE]: the features floxk's commands need (nix-command, flakes) in
# FILE (default /etc/nix/nix.conf), added with `extra-` so the machine's own setting is
# kept, never replaced, in a block marked as ours, once. Nothing else in FILE is touched.
nix_conf_ensure() {
  local conf=${1:-/etc/nix/nix.conf} marker='# added by floxk (scripts/install-system.sh)'
  grep -qsF "$marker" "$conf" && return 0
  if dry_run; then
    echo "would append to $conf: extra-experimental-features = nix-command flakes" >&2
    return 0
  fi
  echo "appending to $conf: extra-experimental-features = nix-command flakes" >&2
  mkdir -p "$(dirname "$conf")"
  printf '%s\nextra-experimental-features = nix-command flakes\n' "$marker" >>"$conf"
}

# floxk's own virtual environment: floxk and its test extras live in .venv of the checkout
# (FLOXK_VENV to move it), never in the system interpreter (Debian's python3 refuses pip
# there, PEP 668). Scripts and tasks run floxk, pytest and task from its bin/.
VENV_DIR=${FLOXK_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}

# venv_activate: put the venv's bin/ first on PATH (python3, floxk, pytest, task, ruff).
venv_activate() {
  export VIRTUAL_ENV="$VENV_DIR" PATH="$VENV_DIR/bin:$PATH"
}

# venv_ensure CHECKOUT [EXTRAS]: create the venv if missing (Debian's python3-venv when the
# system python3 lacks ensurepip) and install the checkout editable (with EXTRAS, e.g.
# "[test]"), again only when pyproject.toml or the extras changed since. Idempotent.
venv_ensure() {
  local checkout=$1 extras=${2:-} stamp="$VENV_DIR/.floxk-installed" want
  if [[ ! -x "$VENV_DIR/bin/python3" ]]; then
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
      apt_ensure python3-venv
    fi
    if dry_run; then
      echo "would create floxk's virtual environment $VENV_DIR and pip install -e '.$extras' there" >&2
      return 0
    fi
    echo "creating floxk's virtual environment: $VENV_DIR (python3 -m venv)" >&2
    python3 -m venv "$VENV_DIR"
  fi
  want="$(sha256sum "$checkout/pyproject.toml" | cut -d' ' -f1) $extras"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]] || ! "$VENV_DIR/bin/python3" -c 'import floxk' 2>/dev/null; then
    if dry_run; then
      echo "would pip install -e '.$extras' into $VENV_DIR" >&2
      return 0
    fi
    echo "installing floxk into $VENV_DIR (pip install -e '.$extras')" >&2
    "$VENV_DIR/bin/python3" -m pip install -q --disable-pip-version-check -e "$checkout$extras"
    echo "$want" >"$stamp"
  fi
}
