"""NumPy's step loops with each step's elementwise work one compiled call (BACKEND "numba_step": ``_forward_step``
after NumPy's W h_{t-1}, ``_backward_step`` before its W^T delta_t), chosen by "auto" above NUMBA_BLAS_MAX_WORK (or
without SciPy) for the dtypes the module lists: same results as the NumPy loop, chosen where they should be.
Skipped, naming the extra, where Numba is not installed."""
import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba (the fast extra) is not installed: the compiled step target is not tested")

import generated  # noqa: E402
import generated._support as support  # noqa: E402
from tests.conftest import rnn_inputs  # noqa: E402


def _run(module, backend, args, dh):
    saved = module.BACKEND
    module.BACKEND = backend
    try:
        h, cache = module.forward(*args)
        return h.copy(), module.backward(dh, cache)
    finally:
        module.BACKEND = saved


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("name", generated.ACTIVATIONS)
def test_the_compiled_steps_give_the_numpy_loops_results(name, dtype, tol):
    """Forward and every gradient of "numba_step" against "numpy", with W Fortran-ordered, h0 and dh strided views:
    ``tol`` relative to each array's largest entry. float64: the same forms, f and f' by the support module's
    functions instead of NumPy's ufuncs (within a few ulp of each other where the values are O(1); gelu's Phi differs
    from SciPy's by up to 1.8e3 ulp only in a tail where h is tiny against the largest entry), 7 steps: ~1e-15
    measured. float32: the compiled step computes f and f' in double and rounds once, NumPy's ufuncs in float32
    (~1e-6 measured)."""
    module = generated.load(name)
    x, h0, V, W, b = rnn_inputs(7, 3, 4, 6, dtype=dtype, seed=5)
    W = np.asfortranarray(W)
    h0 = np.repeat(h0, 2, axis=1)[:, ::2]
    dh = np.random.default_rng(6).standard_normal((7, 3, 12)).astype(dtype)[:, :, ::2]
    h_np, g_np = _run(module, "numpy", (x, h0, V, W, b), dh)
    h_st, g_st = _run(module, "numba_step", (x, h0, V, W, b), dh)
    assert h_st.dtype == dtype and all(g.dtype == dtype for g in g_st)
    np.testing.assert_allclose(h_st, h_np, rtol=0, atol=tol * np.abs(h_np).max())
    for label, got, want in zip(("dx", "dh0", "dV", "dW", "db"), g_st, g_np):
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max(), err_msg=label)


def _count(module, monkeypatch):
    calls = []
    for fn in ("_forward_step", "_backward_step"):
        original = getattr(module, fn)
        monkeypatch.setattr(module, fn, lambda *a, _f=original, _n=fn: calls.append(_n) or _f(*a))
    return calls


@pytest.mark.parametrize("name", ["tanh", "relu", "silu", "mish", "softplus", "gelu", "sin"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_takes_the_compiled_steps_above_the_blas_loops_for_the_listed_dtypes(name, dtype, monkeypatch):
    """N*H*H = 5 * 256 * 256 is past NUMBA_BLAS_MAX_WORK: "auto" runs ``_forward_step`` at each step where the
    arrays' dtype is in NUMBA_STEP_FORWARD and NumPy's ufuncs elsewhere, and ``_backward_step`` where it is in
    NUMBA_STEP_BACKWARD; with the same results as NumPy's loop (float32 to 2e-5 of the largest entry: f in double)."""
    module = generated.load(name)
    assert 5 * 256 * 256 > module.NUMBA_BLAS_MAX_WORK
    calls = _count(module, monkeypatch)
    T = 2
    args = rnn_inputs(T, 5, 3, 256, dtype=dtype, seed=1)
    monkeypatch.setattr(module, "BACKEND", "auto")
    h, cache = module.forward(*args)
    grads = module.backward(np.ones_like(h), cache)
    key = np.dtype(dtype).name
    expected = (["_forward_step"] * T if key in module.NUMBA_STEP_FORWARD else []) + (
        ["_backward_step"] * T if key in module.NUMBA_STEP_BACKWARD else [])
    assert calls == expected
    h_np, g_np = _run(module, "numpy", args, np.ones_like(h))
    np.testing.assert_allclose(h, h_np, rtol=0, atol=2e-5 * np.abs(h_np).max())
    np.testing.assert_allclose(grads.dW, g_np.dW, rtol=0, atol=2e-5 * np.abs(g_np.dW).max())


def test_which_steps_auto_compiles():
    """The rule (codegen.rnn_printer.RnnPrinter.STEP_PASSES_PER_CALL) where it was measured (README, Performance):
    NumPy's vectorised tanh (one pass) beats the compiled double form in both dtypes, and mish's 21 float32 passes
    beat its six compiled elementary functions; every f without a transcendental function compiles, and gelu, whose
    NumPy step calls SciPy's ndtr (not vectorised); sin calls the math library one value at a time in a compiled
    loop and keeps NumPy's forward. Every backward step compiles but softplus's in float32 (f'(h) = -expm1(-h): five
    passes against one expm1)."""
    both = ("float64", "float32")
    for name in ("relu", "leaky_relu", "identity", "softsign", "sigmoid", "silu", "gelu_tanh", "selu", "gelu"):
        assert generated.load(name).NUMBA_STEP_FORWARD == both, name
    assert generated.load("tanh").NUMBA_STEP_FORWARD == ()
    assert generated.load("mish").NUMBA_STEP_FORWARD == ("float64",)
    assert generated.load("sin").NUMBA_STEP_FORWARD == ()
    for name in generated.ACTIVATIONS:
        expected = ("float64",) if name == "softplus" else both
        assert generated.load(name).NUMBA_STEP_BACKWARD == expected, name


def test_auto_takes_the_compiled_steps_without_scipy(monkeypatch):
    """Without SciPy there are no BLAS loops: "auto" goes from the tiny compiled loop to the compiled steps."""
    module = generated.load("relu")
    monkeypatch.setattr(support, "NUMBA_BLAS", False)
    monkeypatch.setattr(module, "BACKEND", "auto")
    calls = _count(module, monkeypatch)
    h, cache = module.forward(*rnn_inputs(2, 4, 3, 64, seed=1))  # N*H*H = 16384: the BLAS loops' range
    module.backward(np.ones_like(h), cache)
    assert calls == ["_forward_step"] * 2 + ["_backward_step"] * 2


def test_numba_step_without_numba_says_what_to_install(monkeypatch):
    module = generated.load("relu")
    monkeypatch.setattr(support, "numba", None)
    monkeypatch.setattr(module, "BACKEND", "numba_step")
    with pytest.raises(ImportError, match="pip install numba"):
        module.forward(*rnn_inputs(2, 1, 2, 3))
    monkeypatch.setattr(module, "BACKEND", "auto")  # auto without Numba: the NumPy loop
    calls = _count(module, monkeypatch)
    h, cache = module.forward(*rnn_inputs(3, 5, 5, 256, seed=1))
    module.backward(np.ones_like(h), cache)
    assert calls == []


@pytest.mark.parametrize("target", ["numba", "numba_blas", "numba_step"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", generated.ACTIVATIONS)
def test_each_compiled_target_gives_numpys_values_at_extreme_inputs(name, dtype, target):
    """f, and the f' backward multiplies by, at +-inf, +-1e30, +-1e200 (float64), +-1e19 and NaN, as NumPy's forms
    give them (1e-12 relative in float64, 1e-6 in float32; NaN where NumPy has NaN): saturate's clamp keeps gelu's
    and gelu_tanh's f' from inf * 0 = NaN in the compiled pair as in NumPy's, and the clamp lets NaN through. f'
    from h (numba_step computes it in double from the stored h) within 2 eps absolute, the bound such forms have
    (tests/test_accuracy.py): selu's h + 1.7580993 at h = -1.7580993 is 0 in float32, 2.3e-8 in double."""
    from verify.accuracy import computed

    module = generated.load(name)
    if target == "numba_blas" and not support.NUMBA_BLAS:
        pytest.skip("SciPy (the fast extra) is not installed: the compiled BLAS target is not tested")
    big = [np.inf, 1e200, 1e30, 1e19] if dtype == np.float64 else [np.inf, 1e30, 1e19]
    E = np.array(big + [-v for v in big] + [np.nan], dtype=dtype)
    with np.errstate(all="ignore"):
        want = computed(module, E, "numpy")
        got = computed(module, E, target)
    for label, g, w in zip(("f", "f'"), got, want):
        atol = 2 * np.finfo(dtype).eps if label == "f'" and module.USES_OUTPUT else 0
        np.testing.assert_allclose(g, w, rtol=1e-12 if dtype == np.float64 else 1e-6, atol=atol, equal_nan=True,
                                   err_msg=f"{label} at {E}")
