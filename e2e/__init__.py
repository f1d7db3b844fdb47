"""`floxk e2e`: the verification suite a user runs against their own cluster.

    providers.py  pytest-kubernetes cluster managers driven by floxk's own `up`/`down`
    plugin.py     the pytest plugin: options, the session's cluster and environments, the report
    kit.py        what the cases share: pods, logs, events, kubectl, node access
    cases/        the cases (pytest files), each a question a user asks about their cluster
    catalog/      the busybox-built packages the suite's environments are made of (no internet)

floxk/_e2e.py runs pytest on cases/ with this plugin; floxk/cli/e2e.py renders the result.
"""
