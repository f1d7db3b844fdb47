"""The install scripts on stock Debian, not only on this machine.

A fresh Debian bookworm and trixie root filesystem (mmdebstrap from the system's own
Debian mirror, nothing but python3 and python3-venv added: Debian's python3 refuses
`pip install` into itself, PEP 668) gets a copy of this checkout, and inside it, in a
private mount namespace, `scripts/install-floxk.sh` installs floxk into the checkout's
.venv and `floxk --version` runs from there; the system interpreter stays without floxk;
a second run changes nothing; `scripts/install-system.sh --dry-run` says what it would
install and write and writes nothing; its system steps (lib.sh's apt_ensure and
nix_conf_ensure, as install-system.sh calls them) install Debian's Nix for real, keep the
operator's own nix.conf settings and change nothing on a second run. The root filesystems are cached by suite (a
tarball under the floxk cache); each test unpacks its own copy into its temp dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITES = ("bookworm", "trixie")
PACKAGES = ("python3", "python3-venv")

pytestmark = [pytest.mark.debian, pytest.mark.root]


def _cache() -> Path:
    return Path(os.environ.get("FLOXK_CACHE") or Path.home() / ".cache" / "floxk") / "rootfs"


def _debian_mirror() -> str:
    """The Debian mirror the system's apt already uses (no host named here)."""
    out = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        uri, _, release = line.partition(" ")
        if release in SUITES or release.startswith(SUITES):
            return uri.rstrip("/")
    pytest.fail("no Debian apt source on this system to build root filesystems from")


def _fresh_rootfs_tar(suite: str) -> Path:
    tar = _cache() / f"fresh-{suite}-{'-'.join(PACKAGES)}.tar"
    if tar.is_file():
        return tar
    tar.parent.mkdir(parents=True, exist_ok=True)
    tmp = tar.with_name(f"{tar.stem}.tmp{os.getpid()}.tar")  # mmdebstrap goes by the suffix
    r = subprocess.run(
        ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
         f"--include={','.join(PACKAGES)}", suite, str(tmp), _debian_mirror()],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        pytest.fail(f"mmdebstrap {suite} failed:\n{r.stderr[-3000:]}")
    tmp.rename(tar)
    return tar


@pytest.fixture(params=SUITES)
def rootfs(request, tmp_path) -> Path:
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap missing (scripts/install-docker.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, mounts)")
    root = tmp_path / request.param
    root.mkdir()
    with tarfile.open(_fresh_rootfs_tar(request.param)) as t:
        t.extractall(root, filter="fully_trusted", numeric_owner=True)
    # The checkout as a user clones it: tracked and untracked-but-not-ignored files.
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    src = root / "src" / "floxk"
    for f in filter(None, files):
        rel = f.decode()
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    # Reach PyPI the way this machine does: its resolver and pip's CA bundle.
    shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
    cert = os.environ.get("PIP_CERT")
    if cert and os.path.isfile(cert):
        (root / cert.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cert, root / cert.lstrip("/"))
    for d in (os.environ.get("PIP_FIND_LINKS") or "").split():
        if d.startswith("/") and os.path.isdir(d):
            (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return root


def _in_rootfs(root: Path, script: str) -> subprocess.CompletedProcess:
    """`script` (bash) as root inside `root`, in a private mount namespace."""
    binds = "".join(
        f'mount --bind -o ro "{d}" "$R{d}"; '
        for d in (os.environ.get("PIP_FIND_LINKS") or "").split()
        if d.startswith("/") and os.path.isdir(d)
    )
    outer = (
        'set -e; mount --rbind /dev "$R/dev"; mount -t proc proc "$R/proc"; '
        f'{binds}exec chroot "$R" /bin/bash -c "$SCRIPT"'
    )
    env = {
        "R": str(root),
        "SCRIPT": f"set -euo pipefail; cd /src/floxk; {script}",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
    }
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", outer],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_install_floxk_into_the_checkouts_venv_on_stock_debian(rootfs):
    managed = list((rootfs / "usr" / "lib").glob("python3.*/EXTERNALLY-MANAGED"))
    assert managed, "a stock Debian python3 marks itself externally managed (PEP 668)"

    first = _in_rootfs(rootfs, "bash scripts/install-floxk.sh && .venv/bin/floxk --version")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.strip() == "floxk 0.1.0"
    assert "creating floxk's virtual environment" in first.stderr

    # Nothing went into the system interpreter.
    system = _in_rootfs(rootfs, "cd / && python3 -c 'import floxk'")  # not the checkout's dir
    assert system.returncode != 0 and "No module named 'floxk'" in system.stderr

    again = _in_rootfs(rootfs, "bash scripts/install-floxk.sh")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "installing" not in again.stderr and "creating" not in again.stderr


def test_install_system_dry_run_says_what_it_would_change_and_changes_nothing(rootfs):
    status = (rootfs / "var" / "lib" / "dpkg" / "status").read_bytes()
    r = _in_rootfs(rootfs, "bash scripts/install-system.sh --dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    would = [line for line in r.stderr.splitlines() if line.startswith("would ")]
    pkgs = next(line for line in would if line.startswith("would install Debian packages"))
    for p in ("nix-bin", "busybox-static", "runc"):
        assert p in pkgs.split(":", 1)[1].split()
    assert any("/etc/nix/nix.conf: extra-experimental-features" in line for line in would)
    assert any("virtual environment" in line for line in would)
    # ... and did none of it.
    assert not (rootfs / "etc" / "nix").exists()
    assert not (rootfs / "src" / "floxk" / ".venv").exists()
    assert (rootfs / "var" / "lib" / "dpkg" / "status").read_bytes() == status


# The system steps of install-system.sh, as it calls them (its Go builds of helm and the
# containerd lines need a toolchain a stock system has not: the dry run above covers them).
SYSTEM_STEPS = "source scripts/lib.sh && apt_ensure nix-bin busybox-static && nix_conf_ensure"
NIX_CONFIG_SHOWN = "nix show-config 2>/dev/null || nix config show"


def test_install_system_installs_nix_and_keeps_the_operators_nix_conf(rootfs):
    conf = rootfs / "etc" / "nix" / "nix.conf"
    conf.parent.mkdir(parents=True)
    operators = b"# the operator's own\nmax-jobs = 3\nexperimental-features = nix-command\n"
    conf.write_bytes(operators)

    first = _in_rootfs(rootfs, SYSTEM_STEPS)
    assert first.returncode == 0, first.stderr[-3000:]
    said = first.stderr.splitlines()
    assert "installing Debian packages (apt-get install): nix-bin busybox-static" in said
    assert (
        "appending to /etc/nix/nix.conf: extra-experimental-features = nix-command flakes" in said
    )
    written = conf.read_bytes()
    assert written.startswith(operators), "the operator's lines are kept, byte for byte"
    assert written.count(b"# added by floxk") == 1

    shown = _in_rootfs(rootfs, NIX_CONFIG_SHOWN)
    assert shown.returncode == 0, shown.stderr[-3000:]
    settings = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition("=") for line in shown.stdout.splitlines())
    )
    assert settings["max-jobs"] == "3"
    assert {"nix-command", "flakes"} <= set(settings["experimental-features"].split())

    again = _in_rootfs(rootfs, SYSTEM_STEPS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [
        line for line in again.stderr.splitlines() if line.startswith(("installing", "appending"))
    ]
    assert conf.read_bytes() == written
