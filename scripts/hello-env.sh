# The hello environment that scripts/quickstart.sh and scripts/demo.sh publish: hello and
# busybox from the bundled test catalog (e2e/catalog). Sourced, from the repository root.

# test_catalog DIR: prepare the catalog flake under DIR (packages built by Nix with a
# static busybox on first use); prints the flake's path.
test_catalog() {
  python3 -c 'import sys; from e2e.catalog import prepare; print(prepare(sys.argv[1]))' "$1"
}

# hello_manifest DIR [TOML]: write DIR/manifest.toml (hello, busybox, a GREETING var),
# TOML appended (more tables, such as a [hook]).
hello_manifest() {
  mkdir -p "$1"
  {
    cat <<'TOML'
version = 1

[install]
hello.pkg-path = "hello"
busybox.pkg-path = "busybox"

[vars]
GREETING = "howdy"
TOML
    if [ -n "${2:-}" ]; then printf '\n%s\n' "$2"; fi
  } >"$1/manifest.toml"
}
