"""Names a cluster and its pods agree on, defined once for every floxk module (and e2e/).

The annotation keys a pod author writes are the node's (shim/annotations.py); these are
what floxk itself puts into a cluster.
"""

# Flox's stub image name: pods move between the two shims. One empty layer, no command.
STUB_IMAGE = "flox/empty:1.0.0"
# RuntimeClass and containerd runtime handler.
RUNTIME_CLASS = "flox"
# Nodes that run the flox runtime; RuntimeClass flox schedules onto them.
FLOX_NODE_LABEL = "flox.dev/enabled"
# The newest supported line that runs here; clusters/kind/versions.env lists the first the
# same (tests/cli checks). Others: `floxk up --k8s-version` (floxk/_cluster/kindimage.py).
DEFAULT_K8S_VERSION = "v1.37.2"
DEFAULT_CLUSTER_NAME = "floxk"
DEFAULT_E2E_CLUSTER_NAME = "floxk-e2e"  # `floxk e2e`'s own cluster
# Server-side apply's field manager for everything floxk writes.
FIELD_MANAGER = "floxk"
