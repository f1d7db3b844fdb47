"""floxk's node side: environment model, realization, containerd shim and runc interposer.

Standard library only: this package runs on nodes that have python3 and nothing else.
It never imports `floxk`.
"""

__version__ = "0.1.0"
