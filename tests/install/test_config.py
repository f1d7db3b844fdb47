"""shim.install against each installed containerd line's own config, checked by `config dump`.

No daemon starts here (tests/cri/test_install.py runs flox pods on installed configs):
install must leave the runtime where that line's containerd reads it, change nothing on a
second run and give the original bytes back on uninstall. k3s/RKE2 cannot run here; their
template is checked as text, and by dumping it with `{{ template "base" . }}` replaced by a
rendered config (which is what k3s does when it starts).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from floxk._shimbuild import build_zipapps
from shim import containerd as ctrd
from shim import install as inst
from shim.errors import ConfigError
from tests.install import nodeconf
from tests.lines import DEBIAN_RUNC, installed_lines

LINES = installed_lines()
pytestmark = pytest.mark.skipif(
    not LINES, reason="no containerd line (scripts/install-containerd.sh)"
)
RUNC = DEBIAN_RUNC


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
    return inst.runtimes(tomllib.loads(dump_text)).get("flox")


def _install(line, config, bin_dir, **kw):
    return inst.install(
        config=config, containerd=str(line.containerd), bin_dir=str(bin_dir), runc=RUNC, **kw
    )


def _uninstall(line, config, bin_dir, **kw):
    return inst.uninstall(
        config=config, containerd=str(line.containerd), bin_dir=str(bin_dir), **kw
    )


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("line", LINES, ids=lambda x: x.version)
def test_default_config_install_twice_uninstall(tmp_path, bin_dir, line):
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    original = nodeconf.default_config(line.containerd)
    config.write_text(original)
    zipapps_before = _tree(bin_dir)

    first = _install(line, config, bin_dir)
    assert first.changed and first.verified and first.mode == "append"
    flox = _flox(nodeconf.dump(line.containerd, config))
    assert flox["runtime_path"] == f"{bin_dir}/containerd-shim-flox-v2-front"
    assert flox["options"]["BinaryName"] == f"{bin_dir}/floxk-runc-front"
    assert flox["pod_annotations"] == ["flox.dev/*"]
    assert os.readlink(bin_dir / "real-runc") == RUNC
    front = (bin_dir / "floxk-runc-front").read_text()
    assert f"exec {bin_dir}/real-runc" in front and f"{bin_dir}/floxk-runc" in front
    # the wrapper's front execs the runc-v2 shim that sits beside this line's containerd
    runc_v2 = Path(line.containerd).resolve().parent / "containerd-shim-runc-v2"
    shim_front = (bin_dir / "containerd-shim-flox-v2-front").read_text()
    assert f"exec {runc_v2} " in shim_front and f"{bin_dir}/containerd-shim-flox-v2" in shim_front
    installed = config.read_bytes()
    assert installed.startswith(original.encode())  # appended, the operator's text untouched
    assert (tmp_path / "etc" / "config.toml.floxk-orig").read_text() == original

    again = _install(line, config, bin_dir)
    assert not again.changed and again.verified
    assert config.read_bytes() == installed

    _uninstall(line, config, bin_dir)
    assert config.read_text() == original
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["config.toml"]
    assert _tree(bin_dir) == zipapps_before and not (bin_dir / "real-runc").is_symlink()


@pytest.mark.parametrize("line", LINES, ids=lambda x: x.version)
def test_dry_run_writes_nothing_and_shows_the_table(tmp_path, bin_dir, line):
    config = tmp_path / "config.toml"
    config.write_text(nodeconf.default_config(line.containerd))
    before = _tree(tmp_path)
    result = _install(line, config, bin_dir, dry_run=True)
    assert _tree(tmp_path) == before
    plugin = ctrd.CRI_RUNTIME_PLUGIN[ctrd.config_version(line.version)]
    assert f'+[plugins."{plugin}".containerd.runtimes.flox]' in result.diff()
    assert result.verified is None


@pytest.mark.parametrize("line", LINES, ids=lambda x: x.version)
def test_imports_line(tmp_path, bin_dir, line):
    """1.x: the block goes into the imported file that defines CRI; 2.x: a conf.d drop-in."""
    files = nodeconf.node_config_with_imports(
        line.version,
        nodeconf.default_config(line.containerd),
        tmp_path,
        "floxk.test/pause:1.0",
        False,
    )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = tmp_path / "config.toml"
    result = _install(line, config, bin_dir)
    if ctrd.config_version(line.version) == 2:
        assert result.mode == "append" and result.target == str(tmp_path / "node.d/cri.toml")
    else:
        assert result.mode == "dropin" and result.target == str(tmp_path / "conf.d/floxk.toml")
    dumped = tomllib.loads(nodeconf.dump(line.containerd, config))
    assert inst.runtimes(dumped)["flox"]["options"]["BinaryName"] == f"{bin_dir}/floxk-runc-front"
    cri = inst.cri_table(dumped)
    assert cri["disable_apparmor"] is True  # the imported settings still apply
    # 1.x drops its built-in runc once a config lists a runtime: install must keep it.
    assert "runc" in inst.runtimes(dumped)
    assert not _install(line, config, bin_dir).changed
    _uninstall(line, config, bin_dir)
    assert {p: p.read_text() for p in files} == files
    assert not (tmp_path / "conf.d/floxk.toml").exists()


@pytest.mark.parametrize("line", LINES, ids=lambda x: x.version)
def test_systemd_cgroup_follows_the_runc_runtime(tmp_path, bin_dir, line):
    text = nodeconf.default_config(line.containerd)
    plugin = ctrd.CRI_RUNTIME_PLUGIN[ctrd.config_version(line.version)]
    table = f'plugins."{plugin}".containerd.runtimes.runc.options'
    config = tmp_path / "config.toml"
    config.write_text(nodeconf.set_key(text, table, "SystemdCgroup", "true"))
    _install(line, config, bin_dir)
    assert _flox(nodeconf.dump(line.containerd, config))["options"]["SystemdCgroup"] is True


def test_foreign_flox_runtime_is_refused_untouched(tmp_path, bin_dir):
    line = LINES[-1]
    cv = ctrd.config_version(line.version)
    plugin = ctrd.CRI_RUNTIME_PLUGIN[cv]
    text = (
        nodeconf.default_config(line.containerd)
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
    text = nodeconf.default_config(line.containerd).rstrip("\n")
    config.write_text(text)
    _install(line, config, bin_dir)
    assert not _install(line, config, bin_dir).changed
    _uninstall(line, config, bin_dir)
    assert config.read_text() == text

    config.unlink()
    result = _install(line, config, bin_dir)
    assert result.verified and config.read_text().splitlines()[1].startswith("version = ")
    _uninstall(line, config, bin_dir)
    assert not config.exists()


def test_failed_verification_puts_everything_back(tmp_path, bin_dir, zipapps):
    """An import that overrides the runtime floxk writes: the dump disagrees -> rollback."""
    line = next((x for x in LINES if x.major == 2), None)
    if line is None:
        pytest.skip("needs a containerd 2.x line (imports merge table by table there)")
    config = tmp_path / "config.toml"
    config.write_text(nodeconf.default_config(line.containerd))
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


@pytest.mark.parametrize("line", LINES, ids=lambda x: x.version)
def test_k3s_template_text(tmp_path, bin_dir, line):
    """Without k3s: the template's text, and the config it renders to (base inlined) dumps."""
    d = tmp_path / "var/lib/rancher/k3s/agent/etc/containerd"
    d.mkdir(parents=True)
    rendered = nodeconf.default_config(line.containerd)
    (d / "config.toml").write_text(rendered)
    cv = ctrd.config_version(line.version)
    result = inst.install(config=d / "config.toml", bin_dir=str(bin_dir), runc=RUNC)
    name = "config-v3.toml.tmpl" if cv == 3 else "config.toml.tmpl"
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
    assert not inst.install(config=d / "config.toml", bin_dir=str(bin_dir), runc=RUNC).changed
    inst.uninstall(config=d / "config.toml", bin_dir=str(bin_dir))
    assert sorted(p.name for p in d.iterdir()) == ["config.toml"]


def test_k3s_existing_template_is_extended_and_restored(tmp_path, bin_dir):
    d = tmp_path / "var/lib/rancher/rke2/agent/etc/containerd"
    d.mkdir(parents=True)
    (d / "config.toml").write_text("version = 3\n")
    own = '{{ template "base" . }}\n\n# my mirror settings\n'
    (d / "config-v3.toml.tmpl").write_text(own)
    result = inst.install(config=d / "config.toml", bin_dir=str(bin_dir), runc=RUNC)
    assert result.kind == "rke2"
    text = (d / "config-v3.toml.tmpl").read_text()
    assert text.startswith(own) and text.count("{{ template") == 1
    inst.uninstall(config=d / "config.toml", bin_dir=str(bin_dir))
    assert (d / "config-v3.toml.tmpl").read_text() == own


def test_cli_install_dry_run_json_then_install_uninstall(tmp_path, bin_dir, capsys):
    import json

    from floxk.cli import main

    line = LINES[-1]
    config = tmp_path / "config.toml"
    original = nodeconf.default_config(line.containerd)
    config.write_text(original)
    common = [
        "--config",
        str(config),
        "--containerd",
        str(line.containerd),
        "--bin-dir",
        str(bin_dir),
    ]
    for extra in (["--dry-run", "-o", "json"], ["-o", "json"]):
        with pytest.raises(SystemExit) as e:
            main(["shim", "install", *common, "--runc", RUNC, *extra])
        assert e.value.code == 0
        data = json.loads(capsys.readouterr().out)
        assert data["changed"] and "runtimes.flox]" in data["diff"]
        assert data["verified"] is (None if "--dry-run" in extra else True)
        assert (config.read_text() == original) is ("--dry-run" in extra)
    with pytest.raises(SystemExit) as e:
        main(["shim", "uninstall", *common])
    assert e.value.code == 0 and config.read_text() == original
