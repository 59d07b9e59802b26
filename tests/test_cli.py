"""The code generator's command line: adding a user activation, and refusals that leave everything as it was."""
import json
import subprocess
import sys

import pytest

from codegen.__main__ import _add, _remove
from codegen.render import write_tree
from derive import CATALOGUE, ExpressionError
from derive.errors import DerivationError


@pytest.fixture
def scratch(tmp_path):
    user = tmp_path / "user_activations.json"
    user.write_text("{}\n")
    root = tmp_path / "generated"
    return user, root


def snapshot(*paths):
    out = {}
    for p in paths:
        if p.is_dir():
            out.update({f: f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()})
        elif p.exists():
            out[p] = p.read_bytes()
    return out


def test_add_writes_the_data_file_and_the_module(scratch):
    user, root = scratch
    _add("swish2", "x*sigmoid(2*x)", user, root, base=())
    assert json.loads(user.read_text()) == {"swish2": "x*sigmoid(2*x)"}
    assert (root / "rnn_swish2.py").exists()
    assert '"swish2"' in (root / "__init__.py").read_text()
    _remove("swish2", user, root, base=())
    assert json.loads(user.read_text()) == {}
    assert not (root / "rnn_swish2.py").exists()


@pytest.mark.parametrize("name, text, error", [
    ("bad", "x + os", ExpressionError),
    ("bad", "7", DerivationError),
    ("Bad-Name", "x", DerivationError),
    ("tanh", "x", DerivationError),
    ("class", "x", DerivationError),
])
def test_failed_add_changes_nothing(scratch, name, text, error):
    user, root = scratch
    base = [a for a in CATALOGUE if a.name == "tanh"]
    _add("kept", "x + sin(x)/2", user, root, base=base)
    before = snapshot(user, root)
    with pytest.raises(error):
        _add(name, text, user, root, base=base)
    assert snapshot(user, root) == before


def test_write_tree_failure_midway_leaves_the_tree_as_it_was(tmp_path, monkeypatch):
    """An error while writing the third file leaves every file, old and new, exactly as before."""
    root = tmp_path / "g"
    write_tree({"a.py": "A\n", "b.py": "B\n", "rnn_c.py": "C\n"}, root)
    before = snapshot(root)
    import codegen.write as write

    calls = {"n": 0}
    real = write._write_new

    def failing(path, content):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (injected)")
        return real(path, content)

    monkeypatch.setattr(write, "_write_new", failing)
    with pytest.raises(OSError, match="injected"):
        write_tree({"a.py": "A2\n", "b.py": "B2\n", "rnn_c.py": "C2\n"}, root)
    assert snapshot(root) == before
    assert calls["n"] == 3
    assert not list(root.glob(".*.tmp")), "temporary files left behind"


def test_command_line_reports_bad_expression_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "codegen", "add", "bad", "__import__('os')"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "__import__" in proc.stderr and "Traceback" not in proc.stderr


def test_failure_midway_through_derive_leaves_generated_as_it_was(tmp_path, monkeypatch):
    """make derive's pipeline with an error injected in the third module's rendering: nothing is written."""
    import shutil

    import codegen.render as render
    from codegen.build import GENERATED, build

    root = tmp_path / "generated"
    shutil.copytree(GENERATED, root, ignore=shutil.ignore_patterns("__pycache__"))
    user = tmp_path / "user.json"
    user.write_text('{"extra": "x + tanh(x)"}')
    before = snapshot(root)
    real = render.module_context
    seen = []

    def failing(d):
        seen.append(d.name)
        if len(seen) == 3:
            raise RuntimeError("injected failure while rendering")
        return real(d)

    monkeypatch.setattr(render, "module_context", failing)
    base = [a for a in CATALOGUE if a.name in ("tanh", "relu", "sin", "sigmoid")]
    with pytest.raises(RuntimeError, match="injected"):
        build(root, user, workers=1, base=base)
    assert snapshot(root) == before

    user.write_text('{"extra": "x + os"}')  # a bad user entry stops make derive before any write
    with pytest.raises(ExpressionError):
        build(root, user, workers=1, base=base)
    assert snapshot(root) == before
