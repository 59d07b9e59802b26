"""add and remove derive only what changed: derivations cached by activation and engine (codegen/derivations.py)."""
import os

import pytest

import codegen.build
from codegen import derivations
from codegen.__main__ import _add, _remove
from codegen.build import drift, emit
from derive import CATALOGUE


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """A scratch user file and generated/ for three catalogue entries, and the names derived so far."""
    seen = []
    real = codegen.build.derive

    def derive(activation):
        seen.append(activation.name)
        return real(activation)

    monkeypatch.setattr(codegen.build, "derive", derive)  # workers=1, no time limit: derived in this process
    user = tmp_path / "user_activations.json"
    user.write_text("{}\n")
    base = tuple(a for a in CATALOGUE if a.name in ("tanh", "relu", "sigmoid"))
    return dict(user_file=user, root=tmp_path / "generated", base=base, workers=1, timeout=None), seen


def test_add_and_remove_derive_only_what_changed(counted):
    kw, seen = counted
    _add("swish2", "x*sigmoid(2*x)", **kw)
    assert sorted(seen) == ["relu", "sigmoid", "swish2", "tanh"]  # nothing cached yet
    seen.clear()
    _add("swish3", "x*sigmoid(3*x)", **kw)
    assert seen == ["swish3"]
    seen.clear()
    _remove("swish2", **kw)
    assert seen == []
    _add("swish2", "x*sigmoid(2*x)", **kw)  # the same expression again: found
    assert seen == []
    # what was written is what a full derivation writes
    assert drift(emit(kw["user_file"], 1, kw["base"]), kw["root"]) == ""


def test_a_changed_engine_or_expression_derives_again(counted, monkeypatch):
    kw, seen = counted
    _add("swish2", "x*sigmoid(2*x)", **kw)
    seen.clear()
    _remove("swish2", **kw)
    _add("swish2", "x*sigmoid(2.5*x)", **kw)  # same name, other expression
    assert seen == ["swish2"]
    seen.clear()
    monkeypatch.setattr(derivations, "engine_key", lambda: "another engine")
    _remove("swish2", **kw)
    assert sorted(seen) == ["relu", "sigmoid", "tanh"]


def test_a_damaged_entry_is_derived_again_and_an_unsafe_folder_is_not_used(counted):
    kw, seen = counted
    _add("swish2", "x*sigmoid(2*x)", **kw)
    folder = derivations.cache_folder(kw["root"])
    for entry in folder.iterdir():
        entry.write_bytes(b"not a pickle")
    seen.clear()
    _remove("swish2", **kw)
    assert sorted(seen) == ["relu", "sigmoid", "tanh"]
    if os.name == "posix":
        folder.chmod(0o777)
        try:
            assert derivations.cache_folder(kw["root"]) is None
            seen.clear()
            _add("swish2", "x*sigmoid(2*x)", **kw)
            assert sorted(seen) == ["relu", "sigmoid", "swish2", "tanh"]
        finally:
            folder.chmod(0o700)


def test_the_key_tells_keep_input_apart():
    """keep_input changes the derivation (the kernel keeps E_t): a cached one without it must not be reused."""
    from derive import Activation
    tanh = next(a for a in CATALOGUE if a.name == "tanh")
    kept = Activation("tanh", tanh.expr, keep_input=True)
    assert derivations.activation_key(tanh) != derivations.activation_key(kept)
