"""The node side's foundation: what every entry point (and floxk/) shares.

Standard library only; it never imports the entry points above it (shim.runc, shim.wrapper,
shim.front, shim.install) nor `floxk`.
"""
