"""What the tests and the benchmarks both build on (never shipped to nodes or in the wheel).

- `harness`: a real containerd of one line on a private socket, driven through CRI;
- `images`: OCI image-layout archives and layers written with tarfile (pause, stub, plain,
  and images holding an environment's store paths);
- `lines`: which containerd and runc lines are installed and pinned;
- `oci`: runc bundles, node.toml files, a signed test hub, env trees for the runc tests;
- `nix`: signing keys and running a program against a chroot store.
- `net`: a free port for a server to start on (or to name one that is not there).
- `layout`: `Below`, named paths below an object's directory.

tests/ wraps these in pytest fixtures (tests/conftest.py, tests/cri/conftest.py);
benchmarks/ calls them directly.
"""
