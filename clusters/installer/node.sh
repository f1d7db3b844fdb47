#!/bin/sh
# floxk installer, node side: run by agent.py through nsenter in the node's own mount
# namespace, from the payload it copied to /var/lib/floxk-installer (HERE).
#   node.sh install    python3 + nix from the bundled .debs when missing, the zipapps,
#                      Nix's config, the operator's node.toml, `floxk-node install`,
#                      then a containerd restart (only when the config changed, or a
#                      restart is still owed from an interrupted run).
#   node.sh uninstall  `floxk-node uninstall --restart`, then every file install created
#                      (recorded in STATE/created); python3 and nix stay installed.
#   node.sh gc         `floxk-node gc --auto` (the agent runs it every [gc] interval: on
#                      clusters the DaemonSet is the periodic GC, so install writes no
#                      systemd timer).
set -eu
# nsenter keeps the container's environment: give the node's usual PATH (containerd often
# lives in /usr/local/bin).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HERE=$(cd "$(dirname "$0")" && pwd)
LIB=/usr/lib/floxk
STATE=/var/lib/floxk/deploy          # survives the payload dir, which every run replaces
CREATED=$STATE/created
NIX_CONF=/etc/nix/nix.conf
NODE_TOML=/etc/floxk/node.toml
NETRC=/etc/nix/netrc                 # Nix's default netrc-file: credentials for http(s) caches
BEGIN='# >>> floxk deploy'
END='# <<< floxk deploy'

say() { echo "node.sh: $*" >&2; }
die() { echo "node.sh: error: $*" >&2; exit 1; }
created() { grep -qxF "$1" "$CREATED" 2>/dev/null || echo "$1" >>"$CREATED"; }

python_ok() {
  for p in /usr/bin/python3 /usr/local/bin/python3; do
    [ -x "$p" ] && "$p" -I -S -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && return 0
  done
  return 1
}

install_packages() {
  if python_ok && command -v nix-store >/dev/null; then return 0; fi
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  repo=$HERE/repo/$codename
  if ! command -v apt-get >/dev/null || [ -z "$codename" ] || [ ! -f "$repo/Packages" ]; then
    die "this node lacks python3 >= 3.11 or nix and the installer has no packages for it" \
        "(${codename:-unknown release}); install python3 and nix-bin yourself, or deploy" \
        "from a machine whose apt reaches this release"
  fi
  say "installing python3 and nix-bin from the bundled packages for Debian $codename"
  apt_dir=$HERE/apt
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb [trusted=yes] file:$repo ./" >"$apt_dir/sources.list"
  # A private source list and index: the node's own apt configuration is not touched.
  set -- -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" \
    -o Acquire::Languages=none -o APT::Sandbox::User=root
  apt-get "$@" update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get "$@" install -y -q --no-install-recommends \
    python3 nix-bin >&2
  python_ok || die "python3 >= 3.11 still missing after installing the packages"
}

install_files() {
  mkdir -p "$STATE" /nix/store /nix/var/nix/gcroots /var/lib/floxk "$LIB" /etc/nix /etc/floxk
  for f in "$HERE"/bin/*; do
    dest=$LIB/$(basename "$f")
    [ -e "$dest" ] || created "$dest"
    cmp -s "$f" "$dest" 2>/dev/null || install -m 0755 "$f" "$dest"
  done
  # floxk realizes with `nix copy`: Nix needs the nix-command feature.
  if [ ! -e "$NIX_CONF" ]; then
    cp "$HERE/nix.conf" "$NIX_CONF" && created "$NIX_CONF"
  elif ! grep -q 'nix-command' "$NIX_CONF"; then
    printf '%s\nextra-experimental-features = nix-command\n%s\n' "$BEGIN" "$END" >>"$NIX_CONF"
  fi
  place "$HERE/node.toml" "$NODE_TOML" 0644
  place "$HERE/netrc" "$NETRC" 0600
}

# place SRC DEST MODE: DEST gets SRC's bytes (when SRC is in the payload). A DEST that was
# there before floxk is kept aside once and put back by uninstall. A DEST floxk created,
# whose SRC the payload no longer has (the setting was dropped), is removed again.
place() {
  src=$1 dest=$2 mode=$3 orig=$STATE/$(basename "$2").orig
  if [ ! -f "$src" ]; then
    if grep -qxF "$dest" "$CREATED" 2>/dev/null; then rm -f "$dest"
    elif [ -e "$orig" ]; then cp -p "$orig" "$dest"; fi
    return 0
  fi
  if [ ! -e "$dest" ]; then
    created "$dest"
  elif [ ! -e "$orig" ] && ! grep -qxF "$dest" "$CREATED" 2>/dev/null; then
    cp -p "$dest" "$orig"
  fi
  cmp -s "$src" "$dest" || install -m "$mode" "$src" "$dest"
}

# The operator's node.toml must work on this node before it replaces the one in use:
# otherwise the node fails (the message names the key) and keeps its current settings.
check_node_toml() {
  [ -f "$HERE/node.toml" ] || return 0
  if ! out=$(python3 -I -S "$HERE/check-node-toml.py" "$HERE/bin/floxk-node" "$HERE/node.toml" 2>&1); then
    die "node.toml refused, this node keeps its current settings: $(echo "$out" | tr '\n' ';' | sed 's/;$//')"
  fi
}

do_install() {
  install_packages
  check_node_toml
  install_files
  # The restart is recorded as owed before the config is written and cleared after it ran,
  # so a run cut short in between (or by the restart itself) restarts on the next run.
  owed=no
  [ -e "$STATE/restart-owed" ] && owed=yes
  touch "$STATE/restart-owed"
  out=$("$LIB/floxk-node" install --bin-dir "$LIB" --no-gc-timer --json)
  echo "$out"
  if [ $owed = no ] && ! echo "$out" | grep -q '^  "changed": true'; then
    rm -f "$STATE/restart-owed"
  fi
  if [ -e "$STATE/restart-owed" ]; then
    say "restarting containerd"
    "$LIB/floxk-node" install --bin-dir "$LIB" --no-gc-timer --restart >&2
    rm -f "$STATE/restart-owed"
  fi
}

do_uninstall() {
  if [ -x "$LIB/floxk-node" ]; then
    "$LIB/floxk-node" uninstall --bin-dir "$LIB" --restart --json
  fi
  if [ -f "$NIX_CONF" ] && grep -qxF "$BEGIN" "$NIX_CONF"; then
    sed -i "/^$BEGIN\$/,/^$END\$/d" "$NIX_CONF"
  fi
  if [ -f "$CREATED" ]; then
    while IFS= read -r path; do rm -f "$path"; done <"$CREATED"
  fi
  if [ -e "$STATE/node.toml.orig" ]; then cp -p "$STATE/node.toml.orig" "$NODE_TOML"; fi
  if [ -e "$STATE/netrc.orig" ]; then cp -p "$STATE/netrc.orig" "$NETRC"; fi
  rmdir "$LIB" /etc/floxk 2>/dev/null || true
  rm -rf "$STATE"
  rm -rf "$HERE"
}

case ${1:-} in
  install) do_install ;;
  uninstall) do_uninstall ;;
  gc) "$LIB/floxk-node" gc --auto ;;
  *) die "usage: node.sh install|uninstall|gc" ;;
esac
