"""floxk-runc: runc interposer that rewrites config.json on create (issue 3)."""

import sys


def main() -> None:
    sys.stderr.write("floxk-runc: not implemented yet\n")
    sys.exit(1)
