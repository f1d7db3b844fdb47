"""The node side's foundation: what every entry point (and floxk/) shares.

Standard library only; it never imports the entry points above it (shim.runc, shim.wrapper,
shim.front, shim.installer, shim.nodecli) nor `floxk`.

The hot-path rule. Every flox container's create and delete start Python once (the sh
fronts of shim.front keep it off every other call), so what shim.runc imports on that path
must not import json, re, pathlib, dataclasses, typing, tomllib or enum, at the top or while
creating a container whose environment is ready: each costs milliseconds per container.
Use shim.core.fastjson, the str-method checks of shim.core.names, shim.core.records for
record classes and os.path; import anything else lazily in the cold function that needs it.
The modules on that path are listed in tests/shim/test_hot_path_imports.py (HOT_MODULES),
which runs a real warm create and imports each of them alone to check the rule;
docs/architecture.md says the same for readers of the docs.
"""
