"""The installer: registers the flox runtime with a node's containerd and takes it off again.

Standard library only. install.py says what install adds and uninstall removes; layout,
detect, render, files, uninstall and restart are its parts; shim.nodecli is `floxk-node`.
"""
