"""shim.installer against each installed containerd line's own config, checked by `config dump`.

No daemon starts here (tests/cri/test_install.py runs flox pods on installed configs):
install must leave the runtime where that line's containerd reads it, change nothing on a
second run and give the original bytes back on uninstall. Configs start from the line's
own `containerd config default` with its imports (2.2+: the host's conf.d) moved into the
test's directory (tests/install/nodeconf.py), and every dump first checks that nothing
outside that directory is imported. k3s/RKE2 cannot run here; their template is checked as
text, and by dumping it with `{{ template "base" . }}` replaced by a rendered config (which
is what k3s does when it starts).
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from floxk._shimbuild import build_zipapps
from shim.core import containerd as ctrd
from shim.core.errors import ConfigError
from shim.installer.detect import cri_table, runtimes
from shim.installer.install import install, install_as_before
from shim.installer.uninstall import uninstall
from testkit.lines import DEBIAN_RUNC, installed_lines
from tests.install import nodeconf

LINES = installed_lines()
pytestmark = pytest.mark.skipif(
    not LINES, reason="no containerd line (scripts/install-containerd.sh)"
)
RUNC = DEBIAN_RUNC


LINES_2 = [x for x in LINES if x.major >= 2]
# (older line whose default config the node kept, newer daemon): an upgraded node
UPGRADES = [
    (old, new)
    for new in LINES_2
    for old in LINES
    if ctrd.default_config_version(old.version) < ctrd.default_config_version(new.version)
]


def _id(line) -> str:
    return line.version


def _cv(line) -> int:
    return ctrd.default_config_version(line.version)


@pytest.fixture(autouse=True)
def private_node_toml(tmp_path, monkeypatch):
    """install reads node.toml (runc_v2_shim, runc): a private, absent one, not /etc/floxk's."""
    monkeypatch.setenv("FLOXK_NODE_CONFIG", str(tmp_path / "no-node.toml"))


@pytest.fixture(scope="module")
def zipapps(tmp_path_factory):
    return build_zipapps(tmp_path_factory.mktemp("zipapps"))


@pytest.fixture
def bin_dir(tmp_path, zipapps):
    d = tmp_path / "bin"
    d.mkdir()
    for a in zipapps.artifacts:
        os.link(a.path, d / a.name)
    return d


def _flox(dump_text: str) -> dict:
    return runtimes(tomllib.loads(dump_text)).get("flox")


def _install(line, config, bin_dir, **kw):
    return install(
        config=config, containerd=str(line.containerd), bin_dir=str(bin_dir), runc=RUNC, **kw
    )


def _uninstall(line, config, bin_dir, **kw):
    return uninstall(config=config, containerd=str(line.containerd), bin_dir=str(bin_dir), **kw)


def _tree(d: Path) -> dict[str, bytes]:
    """Every file and directory under d (dirs as None), so a left-over empty dir shows."""
    return {
        str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(d.rglob("*"))
    }


def _dumped_flox_under_the_line_id(line, config) -> dict:
    """The flox runtime as this line's own dump shows it, under the id of the dump's version."""
    dumped = tomllib.loads(nodeconf.dump(line.containerd, config))
    assert dumped["version"] == ctrd.default_config_version(line.version)
    plugin = ctrd.CRI_RUNTIME_PLUGIN[dumped["version"]]
    return dumped["plugins"][plugin]["containerd"]["runtimes"]["flox"]


def _round_trip(line, etc: Path, config: Path, bin_dir: Path, *, mode: str, target: Path):
    """install, check the dump, install again (no byte changes), uninstall (bytes back)."""
    etc_before, bin_before = _tree(etc), _tree(bin_dir)
    first = _install(line, config, bin_dir)
    assert first.changed and first.verified
    assert (first.mode, first.target) == (mode, str(target))
    flox = _dumped_flox_under_the_line_id(line, config)
    assert flox["runtime_path"] == f"{bin_dir}/containerd-shim-flox-v2-front"
    assert flox["options"]["BinaryName"] == f"{bin_dir}/floxk-runc-front"
    assert flox["pod_annotations"] == ["flox.dev/*"]
    installed = _tree(etc)

    again = _install(line, config, bin_dir)
    assert not again.changed and again.verified
    assert _tree(etc) == installed

    removed = _uninstall(line, config, bin_dir)
    assert [c.role for c in removed.changes if c.path == str(target)] == [
        "config" if mode == "append" else mode
    ]
    assert _tree(etc) == etc_before
    assert _tree(bin_dir) == bin_before
    return first


@pytest.mark.parametrize("line", LINES, ids=_id)
def test_default_config_install_twice_uninstall(tmp_path, bin_dir, line):
    """The line's own default config: 2.2+ import conf.d, so floxk writes a drop-in there
    (in the line's own config version); older lines get the block appended to config.toml."""
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    original = nodeconf.default_config(line.containerd, etc)
    assert tomllib.loads(original)["version"] == ctrd.default_config_version(line.version)
    config.write_text(original)
    dropins = ctrd.imports_dropins(line.version)
    assert tomllib.loads(original).get("imports", []) == (
        [f"{etc}/conf.d/*.toml"] if dropins else []
    )
    target = etc / "conf.d/floxk.toml" if dropins else config
    first = _round_trip(
        line, etc, config, bin_dir, mode="dropin" if dropins else "append", target=target
    )
    if dropins:
        dropin = tomllib.loads(next(c.after for c in first.changes if c.role == "dropin"))
        assert dropin["version"] == ctrd.default_config_version(line.version)
    else:
        after = next(c.after for c in first.changes if c.role == "config")
        assert after.startswith(original)  # appended, the operator's text untouched


@pytest.mark.parametrize("line", LINES, ids=_id)
def test_installed_fronts_and_backup(tmp_path, bin_dir, line):
    config = tmp_path / "config.toml"
    original = nodeconf.set_key(
        nodeconf.default_config(line.containerd, tmp_path), None, "imports", "[]"
    )  # append mode on every line
    config.write_text(original)
    _install(line, config, bin_dir)
    assert os.readlink(bin_dir / "real-runc") == RUNC
    front = (bin_dir / "floxk-runc-front").read_text()
    assert f"exec {bin_dir}/real-runc" in front and f"{bin_dir}/floxk-runc" in front
    # the wrapper's front execs the runc-v2 shim that sits beside this line's containerd
    runc_v2 = Path(line.containerd).resolve().parent / "containerd-shim-runc-v2"
    shim_front = (bin_dir / "containerd-shim-flox-v2-front").read_text()
    assert f"exec {runc_v2} " in shim_front and f"{bin_dir}/containerd-shim-flox-v2" in shim_front
    assert (tmp_path / "config.toml.floxk-orig").read_text() == original


def test_install_as_before_renders_what_a_package_upgrade_replaced(tmp_path, bin_dir):
    """A package upgrade puts its own floxk-runc-front (rendered for /usr/bin/python3) over
    the one install rendered for the node; `floxk-node install --as-before` (the package's
    postinst) renders it again with the options install recorded, and changes nothing else."""
    line = LINES[-1]
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    config.write_text(nodeconf.default_config(line.containerd, etc))
    with pytest.raises(ConfigError, match="recorded its options"):
        install_as_before(bin_dir=str(bin_dir))  # nothing installed yet
    python = os.path.realpath("/usr/bin/python3")  # another spelling than the package's
    _install(line, config, bin_dir, python=python, systemd_dir=str(tmp_path / "units"))
    front = bin_dir / "floxk-runc-front"
    installed, etc_installed = front.read_text(), _tree(etc)
    assert f"{python} " in installed
    front.write_text(installed.replace(f"{python} ", "/usr/bin/python3 "))  # dpkg's copy

    again = install_as_before(bin_dir=str(bin_dir))
    assert [c.path for c in again.changes if c.changed] == [str(front)]
    assert again.verified and front.read_text() == installed and _tree(etc) == etc_installed
    assert not any("not restarted" in n for n in again.notes)  # a front needs no restart
    assert not install_as_before(bin_dir=str(bin_dir)).changed
    _uninstall(line, config, bin_dir)


@pytest.mark.parametrize(("old", "new"), UPGRADES, ids=lambda x: x.version)
def test_upgraded_node_keeps_its_old_config(tmp_path, bin_dir, old, new):
    """A node upgraded to `new` that kept `old`'s config file (version 2 or 3 under a 2.x
    daemon that migrates it, e.g. 1.7's v2 or 2.2's v3 under 2.3's v4): the block takes the
    file's own version and id, the drop-in the daemon's, and `new`'s dump shows the runtime
    under its own id."""
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    text = nodeconf.default_config(old.containerd, etc)
    config.write_text(text)
    file_version = tomllib.loads(text)["version"]
    dropin = bool(tomllib.loads(text).get("imports"))
    target = etc / "conf.d/floxk.toml" if dropin else config
    first = _round_trip(
        new, etc, config, bin_dir, mode="dropin" if dropin else "append", target=target
    )
    assert first.config_version == file_version
    written = tomllib.loads(next(c.after for c in first.changes if c.path == str(target)))
    want = ctrd.default_config_version(new.version) if dropin else file_version
    assert written["version"] == want
    assert "flox" in written["plugins"][ctrd.CRI_RUNTIME_PLUGIN[want]]["containerd"]["runtimes"]


# (daemon, the newest line whose default config is a newer version than the daemon reads)
TOO_NEW = [
    (line, newer[-1]) for line in LINES if (newer := [x for x in LINES if _cv(x) > _cv(line)])
]


@pytest.mark.parametrize(("line", "newer"), TOO_NEW, ids=_id)
def test_newer_config_than_the_daemon_is_refused_with_a_hint(tmp_path, bin_dir, line, newer):
    config = tmp_path / "config.toml"
    text = nodeconf.default_config(newer.containerd, tmp_path)
    config.write_text(text)
    with pytest.raises(ConfigError, match="for a newer containerd") as e:
        _install(line, config, bin_dir)
    span = f"s 2 to {_cv(line)}" if _cv(line) > 2 else " 2"
    assert e.value.message.endswith(
        f"config version {_cv(newer)} is not supported (containerd {line.version} reads"
        f" config version{span})"
    )
    assert config.read_text() == text and not (bin_dir / "real-runc").exists()


@pytest.mark.parametrize("line", LINES_2, ids=_id)
def test_unversioned_config_hint_works(tmp_path, bin_dir, line):
    """A file without `version` (containerd reads it as 1) is refused; the hint's own
    command (`containerd config migrate`) writes a file install then accepts."""
    config = tmp_path / "config.toml"
    old = 'root = "{0}/root"\nstate = "{0}/state"\n[plugins.cri]\n  enable_selinux = false\n'
    config.write_text(old.format(tmp_path))
    with pytest.raises(ConfigError, match="config version 1 is not supported") as e:
        _install(line, config, bin_dir)
    hint = e.value.hint
    assert f"`containerd --config {config} config migrate > {config}.new`" in hint
    migrated = subprocess.run(
        [str(line.containerd), "--config", str(config), "config", "migrate"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert tomllib.loads(migrated)["version"] == ctrd.default_config_version(line.version)
    # migrate writes the line's defaults, 2.2+ with the host's conf.d import: keep it private
    migrated = nodeconf.set_key(migrated, None, "imports", f'["{tmp_path}/conf.d/*.toml"]')
    config.write_text(migrated)
    result = _install(line, config, bin_dir)
    assert result.verified
    assert _dumped_flox_under_the_line_id(line, config)["options"]["BinaryName"] == (
        f"{bin_dir}/floxk-runc-front"
    )


@pytest.mark.parametrize(
    ("kind", "text", "message", "hint"),
    [
        ("k3s", 'root = "/r"\n', "floxk installs into config versions 2 to 4", "upgrade k3s/RKE2"),
        ("k3s", "version = 9\n", "config version 9", "upgrade floxk"),
        ("containerd", 'version = "3"\n', "config version '3'", "must be a number"),
        ("1.x", 'root = "/r"\n', "reads config version 2)", "put `version = 2` at the top"),
    ],
)
def test_unusable_versions_say_what_to_do(tmp_path, bin_dir, kind, text, message, hint):
    if kind == "k3s":
        d = tmp_path / "var/lib/rancher/k3s/agent/etc/containerd"
        d.mkdir(parents=True)
        config, kw = d / "config.toml", {}
    else:
        line = next((x for x in LINES if x.major == 1), None) if kind == "1.x" else LINES[-1]
        if line is None:
            pytest.skip("needs a containerd 1.x line")
        config, kw = tmp_path / "config.toml", {"containerd": str(line.containerd)}
    config.write_text(text)
    with pytest.raises(ConfigError) as e:
        install(config=config, bin_dir=str(bin_dir), runc=RUNC, **kw)
    assert message in e.value.message and hint in e.value.hint
    assert config.read_text() == text and not (bin_dir / "real-runc").exists()


def test_a_config_importing_host_files_fails_loudly(tmp_path):
    """The guard every dump here goes through: host imports end the test, not read."""
    line = LINES[-1]
    config = tmp_path / "config.toml"
    config.write_text(
        f'version = {ctrd.config_version(line.version)}\nimports = ["{nodeconf.HOST_DROPINS}"]\n'
    )
    with pytest.raises(pytest.fail.Exception, match="would read host state"):
        nodeconf.dump(line.containerd, config)
    nested = tmp_path / "nested.toml"
    nested.write_text('imports = ["/etc/containerd/other.toml"]\n')
    config.write_text(f'version = 3\nimports = ["{nested}"]\n')
    with pytest.raises(pytest.fail.Exception, match="other.toml"):
        nodeconf.assert_private(config)


@pytest.mark.parametrize("line", LINES, ids=_id)
def test_dry_run_writes_nothing_and_shows_the_table(tmp_path, bin_dir, line):
    config = tmp_path / "config.toml"
    config.write_text(nodeconf.default_config(line.containerd, tmp_path))
    before = _tree(tmp_path)
    result = _install(line, config, bin_dir, dry_run=True)
    assert _tree(tmp_path) == before
    plugin = ctrd.CRI_RUNTIME_PLUGIN[ctrd.default_config_version(line.version)]
    assert f'+[plugins."{plugin}".containerd.runtimes.flox]' in result.diff()
    assert result.verified is None


@pytest.mark.parametrize("line", LINES, ids=_id)
def test_imports_line(tmp_path, bin_dir, line):
    """1.x: the block goes into the imported file that defines CRI; 2.x: a conf.d drop-in
    beside the node's version 3 one (what 2.0-2.2 nodes carry; on 2.3+ under the line's v4
    main config). The imported file lists no runtime (1.x then forgets its built-in runc)."""
    files = nodeconf.node_config_with_imports(
        line.version,
        nodeconf.default_config(line.containerd, tmp_path),
        tmp_path,
        "floxk.test/pause:1.0",
        False,
        runc_root=False,
    )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = tmp_path / "config.toml"
    result = _install(line, config, bin_dir)
    if ctrd.config_version(line.version) == 2:
        assert result.mode == "append" and result.target == str(tmp_path / "node.d/cri.toml")
    else:
        assert tomllib.loads(files[tmp_path / "conf.d/10-node.toml"])["version"] == 3
        assert result.mode == "dropin" and result.target == str(tmp_path / "conf.d/floxk.toml")
    dumped = tomllib.loads(nodeconf.dump(line.containerd, config))
    assert runtimes(dumped)["flox"]["options"]["BinaryName"] == f"{bin_dir}/floxk-runc-front"
    cri = cri_table(dumped)
    assert cri["disable_apparmor"] is True  # the imported settings still apply
    # 1.x drops its built-in runc once a config lists a runtime: install must keep it.
    assert "runc" in runtimes(dumped)
    assert not _install(line, config, bin_dir).changed
    _uninstall(line, config, bin_dir)
    assert {p: p.read_text() for p in files} == files
    assert not (tmp_path / "conf.d/floxk.toml").exists()


@pytest.mark.parametrize("line", LINES, ids=_id)
def test_flox_options_follow_the_runc_runtime(tmp_path, bin_dir, line):
    """SystemdCgroup (the cgroup driver) and Root (runc's state dir) as the node's runc has
    them: flox containers are runc containers. Unset Root stays unset."""
    text = nodeconf.default_config(line.containerd, tmp_path)
    plugin = ctrd.CRI_RUNTIME_PLUGIN[ctrd.default_config_version(line.version)]
    table = f'plugins."{plugin}".containerd.runtimes.runc.options'
    config = tmp_path / "config.toml"
    config.write_text(nodeconf.set_key(text, table, "SystemdCgroup", "true"))
    _install(line, config, bin_dir)
    options = _flox(nodeconf.dump(line.containerd, config))["options"]
    assert options["SystemdCgroup"] is True and options.get("Root", "") == ""
    _uninstall(line, config, bin_dir)
    config.write_text(nodeconf.set_key(text, table, "Root", f'"{tmp_path}/runc"'))
    result = _install(line, config, bin_dir)
    options = _flox(nodeconf.dump(line.containerd, config))["options"]
    assert options["Root"] == f"{tmp_path}/runc" and options["SystemdCgroup"] is False
    assert f"Root = {tmp_path}/runc" in result.notes[0]


def test_foreign_flox_runtime_is_refused_untouched(tmp_path, bin_dir):
    line = LINES[-1]
    plugin = ctrd.CRI_RUNTIME_PLUGIN[ctrd.default_config_version(line.version)]
    text = (
        nodeconf.default_config(line.containerd, tmp_path)
        + f'\n[plugins."{plugin}".containerd.runtimes.flox]\n  runtime_type = "io.containerd.runc.v2"\n'
    )
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match="floxk did not write"):
        _install(line, config, bin_dir)
    assert config.read_text() == text and not (bin_dir / "real-runc").exists()


def test_no_trailing_newline_and_missing_file_round_trip(tmp_path, bin_dir):
    line = LINES[-1]
    config = tmp_path / "config.toml"
    text = nodeconf.default_config(line.containerd, tmp_path).rstrip("\n")
    config.write_text(nodeconf.set_key(text, None, "imports", "[]").rstrip("\n"))
    text = config.read_text()
    _install(line, config, bin_dir)
    assert not _install(line, config, bin_dir).changed
    _uninstall(line, config, bin_dir)
    assert config.read_text() == text

    config.unlink()
    result = _install(line, config, bin_dir)
    assert result.verified and config.read_text().splitlines()[1] == (
        f"version = {ctrd.default_config_version(line.version)}"
    )
    _uninstall(line, config, bin_dir)
    assert not config.exists()


def test_failed_verification_puts_everything_back(tmp_path, bin_dir, zipapps):
    """An import that overrides the runtime floxk writes: the dump disagrees -> rollback."""
    line = next((x for x in reversed(LINES) if x.major == 2), None)
    if line is None:
        pytest.skip("needs a containerd 2.x line (imports merge table by table there)")
    config = tmp_path / "config.toml"
    config.write_text(
        nodeconf.set_key(nodeconf.default_config(line.containerd, tmp_path), None, "imports", "[]")
    )
    _install(line, config, bin_dir)
    override = tmp_path / "override.toml"
    override.write_text(
        "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.flox.options]\n"
        "  BinaryName = '/elsewhere/runc'\n"
    )
    config.write_text(nodeconf.set_key(config.read_text(), None, "imports", f'["{override}"]'))
    before = config.read_bytes()
    other = tmp_path / "other-bin"
    other.mkdir()
    for a in zipapps.artifacts:
        os.link(a.path, other / a.name)
    with pytest.raises(ConfigError, match="does not show the flox runtime as written"):
        _install(line, config, other)
    assert config.read_bytes() == before
    assert sorted(p.name for p in other.iterdir()) == sorted(a.name for a in zipapps.artifacts)


@pytest.mark.parametrize("line", LINES, ids=_id)
def test_k3s_template_text(tmp_path, bin_dir, line):
    """Without k3s: the template's text, and the config it renders to (base inlined) dumps."""
    d = tmp_path / "var/lib/rancher/k3s/agent/etc/containerd"
    d.mkdir(parents=True)
    rendered = nodeconf.default_config(line.containerd, tmp_path)
    (d / "config.toml").write_text(rendered)
    cv = ctrd.default_config_version(line.version)
    result = install(config=d / "config.toml", bin_dir=str(bin_dir), runc=RUNC)
    name = "config-v3.toml.tmpl" if cv >= 3 else "config.toml.tmpl"
    assert result.kind == "k3s" and result.mode == "template" and result.target == str(d / name)
    assert result.verified is None
    tmpl = (d / name).read_text()
    assert tmpl.splitlines()[1] == '{{ template "base" . }}'
    assert (
        tmpl.count("{{") == 1
        and f'[plugins."{ctrd.CRI_RUNTIME_PLUGIN[cv]}".containerd.runtimes.flox]' in tmpl
    )
    as_k3s_renders = tmp_path / "rendered.toml"
    as_k3s_renders.write_text(tmpl.replace('{{ template "base" . }}', rendered))
    assert _flox(nodeconf.dump(line.containerd, as_k3s_renders))["runtime_path"] == (
        f"{bin_dir}/containerd-shim-flox-v2"
    )
    assert not install(config=d / "config.toml", bin_dir=str(bin_dir), runc=RUNC).changed
    uninstall(config=d / "config.toml", bin_dir=str(bin_dir))
    assert sorted(p.name for p in d.iterdir()) == ["config.toml"]


@pytest.mark.parametrize(("base_line", "line"), [
    (b, x) for x in LINES_2 for b in LINES_2
    if ctrd.default_config_version(b.version) <= ctrd.default_config_version(x.version)
], ids=_id)  # fmt: skip
def test_k3d_template_on_a_k3s_base_of_each_2x_line(tmp_path, base_line, line):
    """clusters/k3d's config-v3.toml.tmpl (what `floxk up --provider k3d` bakes in) after a
    base in any 2.x line's shape (k3s writes version 3; a 2.3+ base may say 4), rendered the
    way k3s does and dumped by `line`: the flox runtime is there under the dump's id."""
    from floxk._cluster import k3d, nodeimage

    tmpl = k3d.render_containerd_template()
    assert tmpl.startswith('{{ template "base" . }}\n') and tmpl.count("{{ template") == 1
    base = nodeconf.default_config(base_line.containerd, tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        tmpl.replace('{{ template "base" . }}', base).replace("{{ .SystemdCgroup }}", "true")
    )
    flox = _dumped_flox_under_the_line_id(line, config)
    assert flox["runtime_path"] == nodeimage.SHIM_PATH
    assert flox["options"] == {"BinaryName": nodeimage.RUNC_PATH, "SystemdCgroup": True}


def test_k3s_existing_template_is_extended_and_restored(tmp_path, bin_dir):
    d = tmp_path / "var/lib/rancher/rke2/agent/etc/containerd"
    d.mkdir(parents=True)
    (d / "config.toml").write_text("version = 3\n")
    own = '{{ template "base" . }}\n\n# my mirror settings\n'
    (d / "config-v3.toml.tmpl").write_text(own)
    result = install(config=d / "config.toml", bin_dir=str(bin_dir), runc=RUNC)
    assert result.kind == "rke2"
    text = (d / "config-v3.toml.tmpl").read_text()
    assert text.startswith(own) and text.count("{{ template") == 1
    uninstall(config=d / "config.toml", bin_dir=str(bin_dir))
    assert (d / "config-v3.toml.tmpl").read_text() == own


def test_cli_install_dry_run_json_then_install_uninstall(tmp_path, bin_dir, capsys):
    import json

    from floxk.cli import main

    line = LINES[-1]
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "config.toml"
    original = nodeconf.default_config(line.containerd, etc)
    config.write_text(original)
    common = [
        "--config",
        str(config),
        "--containerd",
        str(line.containerd),
        "--bin-dir",
        str(bin_dir),
    ]
    before = _tree(etc)
    for extra in (["--dry-run", "-o", "json"], ["-o", "json"]):
        with pytest.raises(SystemExit) as e:
            main(["shim", "install", *common, "--runc", RUNC, *extra])
        assert e.value.code == 0
        data = json.loads(capsys.readouterr().out)
        assert data["changed"] and "runtimes.flox]" in data["diff"]
        assert data["verified"] is (None if "--dry-run" in extra else True)
        assert (_tree(etc) == before) is ("--dry-run" in extra)
    with pytest.raises(SystemExit) as e:
        main(["shim", "uninstall", *common])
    assert e.value.code == 0 and _tree(etc) == before
