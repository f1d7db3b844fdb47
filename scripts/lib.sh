# Sourced by the install scripts. No side effects on load.

# apt_ensure PKG...: install the Debian packages that are not installed yet (idempotent).
apt_ensure() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "installing Debian packages (apt-get install): ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# floxk's own virtual environment: floxk and its test extras live in .venv of the checkout
# (FLOXK_VENV to move it), never in the system interpreter (Debian's python3 refuses pip
# there, PEP 668). Scripts and tasks run floxk, pytest and task from its bin/.
VENV_DIR=${FLOXK_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}

# venv_activate: put the venv's bin/ first on PATH (python3, floxk, pytest, task, ruff).
venv_activate() {
  export VIRTUAL_ENV="$VENV_DIR" PATH="$VENV_DIR/bin:$PATH"
}

# venv_ensure CHECKOUT: create the venv if missing (Debian's python3-venv when the system
# python3 lacks ensurepip) and install the checkout editable with its test extras, again
# only when pyproject.toml changed since the last install. Idempotent.
venv_ensure() {
  local checkout=$1 stamp="$VENV_DIR/.floxk-pyproject.sha256" want
  if [[ ! -x "$VENV_DIR/bin/python3" ]]; then
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
      apt_ensure python3-venv
    fi
    echo "creating floxk's virtual environment: $VENV_DIR (python3 -m venv)" >&2
    python3 -m venv "$VENV_DIR"
  fi
  want=$(sha256sum "$checkout/pyproject.toml" | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]] || ! "$VENV_DIR/bin/python3" -c 'import floxk' 2>/dev/null; then
    echo "installing floxk and its test extras into $VENV_DIR (pip install -e '.[test]')" >&2
    "$VENV_DIR/bin/python3" -m pip install -q --disable-pip-version-check -e "$checkout[test]"
    echo "$want" >"$stamp"
  fi
}
