"""The containerd config files `floxk shim install` reads (each installed line's own `config
default`, mutated: keys, types, nesting, text; v2/v3/v4; imports and drop-ins; k3s renders and
templates): install either registers the runtime (its own `config dump` check passes) and
uninstall then gives every file its bytes back, or it refuses with a FloxkError naming the
file, and not one byte of the config directory has changed.

Real containerd binaries (the lines scripts/install-containerd.sh put in the cache) judge the
configs; k3s is not obtainable here, so its layout is files only (as in tests/install).
Every path install would write is checked on a dry run first: only the test's temp dir.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from floxk._shimbuild import build_zipapps
from shim.core import containerd as ctrd
from shim.core.errors import FloxkError
from shim.installer.detect import live_flox_tasks
from shim.installer.install import install
from shim.installer.layout import BEGIN, END, K3S_BASE
from shim.installer.render import strip_block
from shim.installer.uninstall import uninstall
from testkit.lines import DEBIAN_RUNC, installed_lines
from tests.fuzz import strategies as S
from tests.install import nodeconf

LINES = installed_lines()
pytestmark = pytest.mark.skipif(
    not LINES, reason="no containerd line (scripts/install-containerd.sh)"
)
RUNC = DEBIAN_RUNC
KEYS = ["version", "imports", "plugins", *ctrd.CRI_RUNTIME_PLUGIN.values(), "containerd",
        "runtimes", "runc", "flox", "options", "BinaryName", "SystemdCgroup",
        "default_runtime_name", "runtime_type", "runtime_path"]  # fmt: skip
IMPORTS = "conf.d/*.toml"  # relative: resolved against the config's own (temp) directory


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory):
    """The real zipapps, as a node's package installs them."""
    d = tmp_path_factory.mktemp("bin")
    build_zipapps(d)
    return d


def default_text(line) -> str:
    """The line's `config default`, its imports (if any) pointing at a relative conf.d."""
    text = nodeconf.line_default_config(line.containerd)
    if "imports" in tomllib.loads(text):
        text = nodeconf.set_key(text, None, "imports", f'["{IMPORTS}"]')
    return text


DEFAULTS = {line.version: default_text(line) for line in LINES}


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@st.composite
def config_text(draw, base: str) -> str:
    how = draw(st.sampled_from(["as-is", "structure", "text"]))
    if how == "structure":
        doc, _ = draw(S.mutated(tomllib.loads(base), S.TOML, KEYS))
        return S.to_toml(doc) if isinstance(doc, dict) else base
    if how == "text":
        return draw(S.text_edits(base, "[]{}=\"'.,#\n \\a0/*"))
    return base


DROPINS = st.sampled_from(
    [
        "",
        "version = 3\n",
        "version = 2\n[plugins]\n",
        "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.flox]\nruntime_type = 'x'\n",
        f"{BEGIN}\nversion = 3\n",  # a floxk block without its end line
        f"{BEGIN}\n[plugins\n{END}\n",  # a block that is not TOML
        "version = [3]\n",
        "imports = 5\n",
        "plugins = 5\n",
    ]
)


def note(outcome: str, root: Path) -> None:
    """What became of an example, for `--hypothesis-show-statistics`."""
    if currently_in_test_context():
        event(outcome.replace(str(root), "ROOT")[:90])


def install_or_refuse(root: Path, config: Path, bin_dir: Path, **kw) -> None:
    before = tree(root)
    try:
        planned = install(config=config, bin_dir=str(bin_dir), runc=RUNC, dry_run=True, **kw)
    except FloxkError as e:
        note(f"refused: {type(e).__name__}: {e}", root)
        assert str(root) in str(e), e  # names the file
        assert tree(root) == before
        return
    # A mutated import may point anywhere (an install then rightly writes there): not here.
    outside = [c.path for c in planned.changes if not c.path.startswith((str(root), str(bin_dir)))]
    if currently_in_test_context():
        assume(not outside)
    else:
        assert not outside
    try:
        result = install(config=config, bin_dir=str(bin_dir), runc=RUNC, **kw)
    except FloxkError as e:
        note(f"undone: {type(e).__name__}: {e}", root)
        assert str(root) in str(e), e
        assert tree(root) == before, "a refused config was rewritten"
        return
    note(f"installed: {result.mode}", root)
    assert result.kind != "containerd" or result.verified
    uninstall(config=config, bin_dir=str(bin_dir), **kw)
    expected = without_block(before, str(Path(result.target).relative_to(root)))
    assert tree(root) == expected, "uninstall did not give the files their bytes back"


def without_block(files: dict[str, bytes], target: str) -> dict[str, bytes]:
    """The files as uninstall leaves them: all as they were, but a floxk block that the
    target (where install wrote) held before goes, being floxk's too (with the file, when
    nothing else is left in it)."""
    out = dict(files)
    if target in out and BEGIN.encode() in out[target]:
        text = strip_block(out.pop(target).decode())[0]
        if text:
            out[target] = text.encode()
    return out


@settings(max_examples=S.budget(20))
@given(data=st.data(), version=st.sampled_from(sorted(DEFAULTS)))
def test_install_on_mutated_containerd_configs(bin_dir, data, version):
    line = next(line for line in LINES if line.version == version)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        config = root / "config.toml"
        config.write_text(data.draw(config_text(DEFAULTS[version]), label="config.toml"))
        for i, text in enumerate(data.draw(st.lists(DROPINS, max_size=2), label="conf.d")):
            (root / "conf.d").mkdir(exist_ok=True)
            # An operator's own empty conf.d/floxk.toml is not generated: uninstall deletes
            # it (test_found_empty_dropin_of_the_operator below).
            name = "floxk.toml" if i == 0 and text else f"{i}0-node.toml"
            (root / "conf.d" / name).write_text(text)
        install_or_refuse(root, config, bin_dir, containerd=str(line.containerd))


@settings(max_examples=S.budget(40))
@given(data=st.data(), version=st.sampled_from(sorted(DEFAULTS)))
def test_install_on_mutated_k3s_layouts(bin_dir, data, version):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        etc = root / "var/lib/rancher/k3s/agent/etc/containerd"
        etc.mkdir(parents=True)
        (etc / "config.toml").write_text(data.draw(config_text(DEFAULTS[version]), label="render"))
        for name in data.draw(
            st.lists(st.sampled_from(["config.toml.tmpl", "config-v3.toml.tmpl"]), unique=True)
        ):
            text = data.draw(st.one_of(st.just(""), DROPINS))
            text = K3S_BASE + "\n\n# mine\n" + text
            (etc / name).write_text(text)
        install_or_refuse(root, etc / "config.toml", bin_dir)


def test_no_host_paths_in_the_defaults():
    for text in DEFAULTS.values():
        assert all(not os.path.isabs(p) for p in tomllib.loads(text).get("imports", []))


def _line(*major_minor: tuple[int, int]):
    line = next((x for x in LINES if ctrd.parse_version(x.version)[:2] in major_minor), None)
    if line is None:
        pytest.skip(f"needs a containerd line {major_minor}")
    return line


def _layout(root: Path, line, dropins: dict[str, str]) -> Path:
    (root / "config.toml").write_text(DEFAULTS[line.version])
    (root / "conf.d").mkdir()
    for name, text in dropins.items():
        (root / "conf.d" / name).write_text(text)
    return root / "config.toml"


def test_found_imported_plugins_that_are_not_a_table(tmp_path, bin_dir):
    """containerd 1.x accepts `plugins = 5` in an imported file; install's search for the
    file holding the CRI settings raised TypeError on it."""
    line = _line((1, 6), (1, 7))
    config = _layout(tmp_path, line, {"10-node.toml": "plugins = 5\n"})
    install_or_refuse(tmp_path, config, bin_dir, containerd=str(line.containerd))


def test_found_block_without_end_line_names_the_file(tmp_path, bin_dir):
    line = _line((2, 1), (2, 2))
    config = _layout(tmp_path, line, {"floxk.toml": f"{BEGIN}\nversion = 3\n"})
    before = tree(tmp_path)
    with pytest.raises(FloxkError, match=r"conf.d/floxk.toml: floxk's block has no end line"):
        install(config=config, bin_dir=str(bin_dir), runc=RUNC, containerd=str(line.containerd))
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "render",
    [
        "version = 2\nplugins = []\n",
        "version = 3\n[plugins]\n'io.containerd.cri.v1.runtime' = 5\n",
        "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd]\nruntimes = 'runc'\n",
        "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd]\ndefault_runtime_name = ['x']\n",
        "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc]\noptions = 5\n",
        "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc.options]\nBinaryName = 5\n",
    ],
)
def test_found_k3s_render_with_tables_of_the_wrong_type(tmp_path, bin_dir, render):
    """install reads a k3s render as it is: AttributeError/TypeError came out of cri_table,
    default_runc_options and find_real_runc on these."""
    etc = tmp_path / "var/lib/rancher/k3s/agent/etc/containerd"
    etc.mkdir(parents=True)
    (etc / "config.toml").write_text(render)
    install_or_refuse(tmp_path, etc / "config.toml", bin_dir)


def test_found_empty_dropin_of_the_operator(tmp_path, bin_dir):
    """A conf.d/floxk.toml the operator had (empty) was deleted by uninstall: install appends
    its block there without a backup (drop-ins get none), and uninstall removed a drop-in
    that is empty without the block, taking it for one install created. Install now records
    the files that were there before it (`preexisting`), and uninstall keeps those."""
    line = _line((2, 1), (2, 2))  # config version 3, importing conf.d/*.toml
    _layout(tmp_path, line, {"floxk.toml": ""})
    before = tree(tmp_path)
    kw = dict(
        config=tmp_path / "config.toml", bin_dir=str(bin_dir), containerd=str(line.containerd)
    )
    assert install(runc=RUNC, **kw).mode == "dropin"
    uninstall(**kw)
    assert tree(tmp_path) == before


# --- what install writes into those files -----------------------------------------------------

TOML_KEYS = st.one_of(S.TEXT, st.sampled_from(KEYS))
WRITABLE = st.recursive(
    st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), S.TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(TOML_KEYS, inner, max_size=3)
    ),
    max_leaves=10,
)


def _no_tables_in_lists(value) -> bool:
    if isinstance(value, list):
        return all(
            not isinstance(v, dict | list) or (isinstance(v, list) and _no_tables_in_lists(v))
            for v in value
        )
    if isinstance(value, dict):
        return all(_no_tables_in_lists(v) for v in value.values())
    return True


@given(st.dictionaries(TOML_KEYS, WRITABLE, max_size=4).filter(_no_tables_in_lists))
def test_containerd_toml_writer_round_trips(doc):
    """shim.core.containerd.to_toml (runtime tables, kept runtimes' names and values as a config
    dump had them) writes TOML that reads back as the same data."""
    assert tomllib.loads(ctrd.to_toml(doc)) == doc


@pytest.mark.parametrize(
    "doc",
    [
        {"runtimes": {"a\n": {"runtime_type": "io.containerd.runc.v2"}}},  # `$` took "a\n" as bare
        {"options": {"BinaryName": "/opt/\U0001f600/runc"}},  # written as a surrogate pair
        {"k": "\x7f"},
    ],
)
def test_found_containerd_toml_writer_cases(doc):
    assert tomllib.loads(ctrd.to_toml(doc)) == doc


def test_found_state_that_is_not_a_string(bin_dir):
    """`state = true` in a k3s render (read as it is, no daemon judges it) made the
    live-task check raise TypeError. Only the parsed config matters here: a stand-in node."""
    from types import SimpleNamespace

    for state in (True, 5, [], ""):
        node = SimpleNamespace(effective={"state": state})
        assert live_flox_tasks(node, str(bin_dir)) == []
