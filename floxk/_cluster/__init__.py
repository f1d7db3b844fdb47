"""Dev clusters with the flox runtime inside: spec, node image, kind/k3d providers, kube helpers.

Core functions take plain arguments and return data; the CLI (floxk/cli/cluster.py, run.py,
doctor.py) renders. Long steps report through an optional `progress(str)` callback instead
of printing.
"""
