"""The expression cache of interop.kernels: keys, integrity checks, folder permissions, and Numba's on-disk cache."""
import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from interop import kernels
from tests.conftest import rnn_inputs

ROOT = Path(__file__).resolve().parent.parent
EXPR = "x*tanh(x) + 0.1*x"  # derives in about a second, and keeps E (f' is not a function of h)
POSIX = os.name == "posix"


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path, monkeypatch):
    """A fresh cache folder per test, nothing loaded in this process yet, and no user-provided Numba cache."""
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(kernels, "_LOADED", {})
    return tmp_path / "kernels"


def cached_path(folder, expression=EXPR):
    return Path(folder) / f"rnn_{kernels.cache_name(expression)}.py"


def gradients(module):
    """forward + backward of L = sum_t <G_t, h_t> on fixed inputs."""
    x, h0, V, W, b = rnn_inputs(5, 2, 3, 4, seed=4)
    h, cache = module.forward(x, h0, V, W, b)
    G = np.random.default_rng(5).standard_normal(h.shape)
    return (h, *module.backward(G, cache))


def assert_works(module):
    """The module is the expression's (its f at 0.5 is 0.5 tanh(0.5) + 0.05) and its backward runs."""
    np.testing.assert_allclose(module.activation(np.array([0.5])), [0.5 * np.tanh(0.5) + 0.05], rtol=1e-15)
    assert all(np.all(np.isfinite(a)) for a in gradients(module))


def private_mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# --- item 2: Numba's on-disk cache re-imports the module in every later process ---------------------------------

SUBPROCESS = """
import json, sys
import numpy as np
from interop.kernels import kernel_module
from tests.conftest import rnn_inputs

module = kernel_module(sys.argv[1])
module.BACKEND = "numba"  # the compiled loops, whatever the size
x, h0, V, W, b = rnn_inputs(5, 2, 3, 4, seed=4)
h, cache = module.forward(x, h0, V, W, b)
grads = module.backward(np.random.default_rng(5).standard_normal(h.shape), cache)
stats = {f: [sum(getattr(module, f).stats.cache_hits.values()), sum(getattr(module, f).stats.cache_misses.values())]
         for f in ("_forward_loop", "_backward_loop")}
print(json.dumps({"arrays": [a.tolist() for a in (h, *grads)], "stats": stats}))
"""


def test_numba_cache_loads_in_fresh_processes(scratch_cache, monkeypatch):
    """Three processes in a row, one cache folder: the first derives and compiles, the next two load the compiled
    loops from Numba's cache (before the fix they failed with "No module named '<dynamic>'")."""
    pytest.importorskip("numba", reason="Numba (the fast extra) is not installed: its on-disk cache not tested")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", SUBPROCESS, EXPR], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    for name in ("_forward_loop", "_backward_loop"):
        assert runs[0]["stats"][name][1] >= 1, "the first process compiles"
        for later in runs[1:]:
            assert later["stats"][name] == [1, 0], f"{name} must come from Numba's cache: hits, misses"
    # the same machine code on the same inputs: bit for bit
    for later in runs[1:]:
        for a, b in zip(runs[0]["arrays"], later["arrays"]):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    # and the compiled loops agree with the NumPy loops (fastmath may reorder sums: rounding only)
    module = kernels.kernel_module(EXPR)
    monkeypatch.setattr(module, "BACKEND", "numpy")
    for a, b in zip(runs[0]["arrays"], gradients(module)):
        np.testing.assert_allclose(np.array(a), b, rtol=1e-10, atol=1e-13)


def test_module_is_registered_under_a_stable_name():
    module = kernels.kernel_module(EXPR)
    assert sys.modules[module.__name__] is module
    assert module.__name__ == f"{kernels.MODULE_PREFIX}rnn_{kernels.cache_name(EXPR)}"


# --- item 7: what runs from the cache folder --------------------------------------------------------------------

def _planted(marker):
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n".encode()


@pytest.mark.parametrize("content", ["planted", "planted_with_forged_digest", "empty", "cut_short", "edited"])
def test_bad_cached_file_is_regenerated_not_run(scratch_cache, tmp_path, content):
    marker = tmp_path / "marker"
    if content in ("cut_short", "edited"):  # start from a whole file
        kernels.kernel_module(EXPR)
        good = cached_path(scratch_cache).read_bytes()
        kernels._LOADED.clear()
    if content == "planted":
        data = _planted(marker)
    elif content == "planted_with_forged_digest":
        data = _planted(marker) + kernels.TRAILER + b"0" * 64 + b"\n"
    elif content == "empty":
        data = b""
    elif content == "cut_short":
        data = good[: len(good) // 2]
    else:  # edited after it was written: the digest no longer matches
        data = good.replace(b"np.tanh", b"np.sinh", 1) + _planted(marker)
    path = cached_path(scratch_cache)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(data)
    module = kernels.kernel_module(EXPR)
    assert not marker.exists(), "the planted code ran"
    assert_works(module)
    regenerated = path.read_bytes()
    assert regenerated != data and kernels._digest_matches(regenerated)
    assert module.__file__ == str(path)


def test_valid_file_is_read_not_derived_again(scratch_cache, monkeypatch):
    first = kernels.kernel_module(EXPR)
    kernels._LOADED.clear()

    def refuse(*args, **kwargs):
        raise AssertionError("derived again although the cached file is whole")

    monkeypatch.setattr(kernels, "_generate", refuse)
    second = kernels.kernel_module(EXPR)
    assert second is not first and second.__file__ == first.__file__
    assert_works(second)


def test_symlink_at_the_cached_path_is_replaced_not_followed(scratch_cache, tmp_path):
    kernels.kernel_module(EXPR)
    kernels._LOADED.clear()
    path = cached_path(scratch_cache)
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_bytes(path.read_bytes())  # whole and with a valid digest, but not the cache's own file
    path.unlink()
    path.symlink_to(elsewhere)
    assert_works(kernels.kernel_module(EXPR))
    assert not path.is_symlink()


@pytest.mark.skipif(not POSIX or os.geteuid() != 0, reason="only root can give a file to another user")
def test_file_of_another_user_is_regenerated(scratch_cache):
    kernels.kernel_module(EXPR)
    kernels._LOADED.clear()
    path = cached_path(scratch_cache)
    os.chown(path, 65534, 65534)
    assert_works(kernels.kernel_module(EXPR))
    assert os.stat(path).st_uid == os.geteuid()


# --- item 7: the key covers the engine ---------------------------------------------------------------------------

def test_stale_engine_fingerprint_regenerates(scratch_cache, monkeypatch):
    monkeypatch.setattr(kernels, "engine_fingerprint", lambda: "engine one")
    old = kernels.kernel_module(EXPR)
    monkeypatch.setattr(kernels, "engine_fingerprint", lambda: "engine two")
    new = kernels.kernel_module(EXPR)
    assert new.NAME != old.NAME and new.__file__ != old.__file__
    assert sorted(p.name for p in scratch_cache.glob("rnn_*.py")) == sorted(
        [Path(old.__file__).name, Path(new.__file__).name])
    assert_works(new)


def _engine_copy(tmp_path):
    roots = []
    for package in kernels.ENGINE:
        dst = tmp_path / "engine" / package
        shutil.copytree(ROOT / package, dst, ignore=shutil.ignore_patterns("__pycache__"))
        roots.append(dst)
    return roots


def test_fingerprint_covers_source_templates_and_sympy(tmp_path):
    import sympy

    roots = _engine_copy(tmp_path)
    base = kernels.fingerprint(roots, sympy.__version__)
    assert base == kernels.engine_fingerprint()  # the copy hashes as the real engine does
    assert kernels.fingerprint(roots, "0.0") != base
    for rel in ("codegen/templates/rnn_module.py.jinja", "codegen/numpy_printer.py", "derive/elementwise.py"):
        path = tmp_path / "engine" / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert kernels.fingerprint(roots, sympy.__version__) != base, rel
        path.write_bytes(original)
    # neither bytecode nor the user's activation list is the engine
    (roots[0] / "__pycache__").mkdir()
    (roots[0] / "__pycache__" / "junk.py").write_text("x = 1\n")
    (roots[0] / "user_activations.json").write_text('{"a": "x"}\n')
    assert kernels.fingerprint(roots, sympy.__version__) == base


# --- item 7: the folder ------------------------------------------------------------------------------------------

@pytest.mark.skipif(not POSIX, reason="owners and mode bits are POSIX")
def test_new_folder_is_private(scratch_cache):
    module = kernels.kernel_module(EXPR)
    assert private_mode(scratch_cache) == 0o700
    assert private_mode(scratch_cache / "__pycache__") == 0o700
    assert private_mode(module.__file__) == 0o600


def _assert_fell_back(record, module, configured, why):
    messages = [str(w.message) for w in record if issubclass(w.category, kernels.CacheWarning)]
    assert len(messages) == 1 and str(configured) in messages[0] and why in messages[0], messages
    assert Path(module.__file__).parent == kernels._PRIVATE[0]
    assert private_mode(kernels._PRIVATE[0]) == 0o700
    assert_works(module)


@pytest.mark.skipif(not POSIX, reason="owners and mode bits are POSIX")
@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_folder_writable_by_others_is_bypassed(scratch_cache, tmp_path, mode):
    """A planted module with a digest that matches (anyone can compute one) in a folder others can write must
    not run: the folder is not used at all."""
    marker = tmp_path / "marker"
    scratch_cache.mkdir()
    planted = _planted(marker)
    cached_path(scratch_cache).write_bytes(planted + kernels.TRAILER
                                           + hashlib.sha256(planted).hexdigest().encode() + b"\n")
    os.chmod(scratch_cache, mode)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        module = kernels.kernel_module(EXPR)
    assert not marker.exists(), "the planted code ran"
    _assert_fell_back(record, module, scratch_cache, "writable by group or others")


@pytest.mark.skipif(not POSIX, reason="owners and mode bits are POSIX")
def test_pycache_writable_by_others_is_bypassed(scratch_cache):
    (scratch_cache / "__pycache__").mkdir(parents=True)
    os.chmod(scratch_cache, 0o700)
    os.chmod(scratch_cache / "__pycache__", 0o777)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        module = kernels.kernel_module(EXPR)
    _assert_fell_back(record, module, scratch_cache, "__pycache__ is writable by group or others")


@pytest.mark.skipif(not POSIX, reason="owners and mode bits are POSIX")
def test_folder_of_another_user_is_bypassed(scratch_cache, monkeypatch):
    if os.geteuid() == 0:
        scratch_cache.mkdir(mode=0o700)
        os.chown(scratch_cache, 65534, 65534)
    else:  # "/" belongs to root
        monkeypatch.setenv("RNN_BPTT_CACHE", "/")
        scratch_cache = Path("/")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        module = kernels.kernel_module(EXPR)
    _assert_fell_back(record, module, scratch_cache, "belongs to another user")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc (a read-only folder, even for root)")
def test_read_only_folder_falls_back(monkeypatch):
    monkeypatch.setenv("RNN_BPTT_CACHE", "/proc/self")  # ours, mode 0555, and no file can be made in it
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        module = kernels.kernel_module(EXPR)
    _assert_fell_back(record, module, "/proc/self", "cannot be written")


@pytest.mark.skipif(not POSIX or os.geteuid() == 0, reason="root writes through mode 0500")
def test_folder_made_read_only_after_use_falls_back(scratch_cache):
    """Its cached file is whole, but Numba could not write its compiled loops beside it: not used at all."""
    kernels.kernel_module(EXPR)
    kernels._LOADED.clear()
    os.chmod(scratch_cache, 0o500)
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            module = kernels.kernel_module(EXPR)
    finally:
        os.chmod(scratch_cache, 0o700)  # so that pytest can remove it
    _assert_fell_back(record, module, scratch_cache, "cannot be written")


def test_folder_that_is_a_file_falls_back(scratch_cache):
    scratch_cache.write_text("not a folder\n")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        module = kernels.kernel_module(EXPR)
    _assert_fell_back(record, module, scratch_cache, "cannot be created")


class _Planted:
    """Unpickling this writes a marker file: a stand-in for the code a planted Numba index would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (Path(self.marker), "ran")


@pytest.mark.skipif(not POSIX, reason="owners and mode bits are POSIX")
def test_numba_pickles_are_not_loaded_from_a_folder_others_can_write(scratch_cache, tmp_path, monkeypatch):
    pytest.importorskip("numba", reason="Numba (the fast extra) is not installed: its on-disk cache not tested")
    marker = tmp_path / "marker"
    module = kernels.kernel_module(EXPR)
    monkeypatch.setattr(module, "BACKEND", "numba")
    gradients(module)  # compiles and writes Numba's index (.nbi) and data (.nbc) files
    indexes = sorted((scratch_cache / "__pycache__").glob("*.nbi"))
    assert indexes
    for index in indexes:
        index.write_bytes(pickle.dumps(_Planted(marker)))

    def run_from(folder):
        monkeypatch.setenv("RNN_BPTT_CACHE", str(folder))
        kernels._LOADED.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kernels.CacheWarning)
            loaded = kernels.kernel_module(EXPR)
        monkeypatch.setattr(loaded, "BACKEND", "numba")
        gradients(loaded)

    shared = tmp_path / "shared"
    shutil.copytree(scratch_cache, shared)
    os.chmod(shared, 0o777)
    run_from(shared)
    assert not marker.exists(), "Numba loaded a pickle from a folder others can write"
    run_from(scratch_cache)  # the control: from the user's own folder Numba does load it
    assert marker.exists()
