"""floxk: imageless Kubernetes for developers."""

from shim import __version__

__all__ = ["__version__"]
