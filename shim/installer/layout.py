"""Names and paths the installer puts on a node, and the markers of its config block."""

from __future__ import annotations

DEFAULT_BIN_DIR = "/usr/lib/floxk"

DEFAULT_CONFIG = "/etc/containerd/config.toml"

RANCHER_DIRS = {
    "k3s": "/var/lib/rancher/k3s/agent/etc/containerd",
    "rke2": "/var/lib/rancher/rke2/agent/etc/containerd",
}

SHIM_NAME = "containerd-shim-flox-v2"

RUNC_NAME = "floxk-runc"

NODE_NAME = "floxk-node"

FRONT_NAME = "floxk-runc-front"

SHIM_FRONT_NAME = "containerd-shim-flox-v2-front"

RUNC_V2_SHIM = "containerd-shim-runc-v2"

REAL_RUNC_LINK = "real-runc"

RECORD_NAME = ".floxk-install.json"

DROPIN_NAME = "floxk.toml"

BACKUP_SUFFIX = ".floxk-orig"

BEGIN = "# >>> floxk: flox runtime"

END = "# <<< floxk"

K3S_BASE = '{{ template "base" . }}'

NO_RUNTIME_HINT = (
    'pods then fail with `no runtime for "flox" is configured`; see docs/install.md, '
    "troubleshooting"
)

GC_SERVICE = "floxk-gc.service"

GC_TIMER = "floxk-gc.timer"

SYSTEMD_DIR = "/etc/systemd/system"

SERVICE_UNITS = {
    "containerd": ("containerd",),
    "k3s": ("k3s", "k3s-agent"),
    "rke2": ("rke2-server", "rke2-agent"),
}
