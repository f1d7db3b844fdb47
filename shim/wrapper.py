"""containerd-shim-flox-v2: thin wrapper over containerd-shim-runc-v2 (issue 3)."""

import sys


def main() -> None:
    sys.stderr.write("containerd-shim-flox-v2: not implemented yet\n")
    sys.exit(1)
