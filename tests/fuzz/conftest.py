"""Hypothesis profiles for the property tests of every parser of outside input.

"default" keeps `task test` short (the whole of tests/fuzz in well under a minute);
"fuzz" is `task fuzz`: many more examples per property. FLOXK_FUZZ_PROFILE picks one
(or pytest's `--hypothesis-profile`). No example database: tests write only into their
own temp dirs, and a failure prints the `@reproduce_failure` blob to replay it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Where Hypothesis puts what it keeps (the patches it writes on a failure): not the tree.
_HOME = tempfile.mkdtemp(prefix="floxk-hypothesis-")
set_hypothesis_home_dir(_HOME)
atexit.register(shutil.rmtree, _HOME, True)  # a temp dir per run, gone with the run

_COMMON = dict(
    deadline=None,  # subprocesses and a 2-core machine: timings are not the property
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("default", max_examples=60, **_COMMON)
settings.register_profile("fuzz", max_examples=3000, **_COMMON)
settings.load_profile(os.environ.get("FLOXK_FUZZ_PROFILE", "default"))
