"""The forward step that computes f and f' in one pass and keeps f'(E_t) (issue #13), and the printer rules it uses.

- the one-pass expressions (common subexpressions shared, saturated terms shared, sigmoids written in exp(-|u|)) are
  f and f' themselves: checked in mpmath at 40 digits, not in floats;
- the cache's dh_dE is f'(E_t), with E_t recomputed from the inputs; backward only reads it (both backends);
- the generated one-pass code agrees with activation and activation_derivative called separately;
- exact strings for each new printer rule (SymPy's test_pycode.py style).
"""
import mpmath
import numpy as np
import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1

import generated
import generated._support as support
from codegen.numpy_printer import KernelPrinter, pair_prepared
from codegen.passes import ndtr, prepare, share_saturated, shared_sigmoids
from derive import derive
from derive.catalogue import CATALOGUE
from derive.functions import sigmoid, softplus
from derive.parse import X as x
from tests.conftest import rnn_inputs

KEPT = [m for m in generated.ACTIVATIONS if not generated.load(m).USES_OUTPUT]  # silu, gelu, gelu_tanh, mish, sin
E = sp.Symbol("E", real=True)


def _mp(expr):
    """An mpmath function of E for the printed forms' SymPy functions (ndtr, sigmoid, Heaviside as [u >= 0])."""
    table = {"ndtr": lambda u: mpmath.erfc(-u / mpmath.sqrt(2)) / 2, "sigmoid": lambda u: 1 / (1 + mpmath.exp(-u)),
             "softplus": lambda u: mpmath.log1p(mpmath.exp(u)), "Heaviside": lambda u, at0: 1 if u >= 0 else 0,
             "expm1": mpmath.expm1, "log1p": mpmath.log1p}
    return sp.lambdify(E, expr, modules=[table, "mpmath"])


def _one_pass(name):
    """f and f' as the one pass computes them (codegen.numpy_printer.pair_prepared, what codegen.inplace_printer
    writes one ufunc a line), and f, f' as printed separately (the same numerics passes, constants rounded to double
    alike)."""
    d = derive(next(a for a in CATALOGUE if a.name == name))
    full = pair_prepared(d.scalar.f, d.scalar.df, x, "E")
    f_prepared, df_prepared = prepare(d.scalar.f), prepare(d.scalar.df)
    return full, (f_prepared.subs(x, E), df_prepared.subs(x, E))


@pytest.mark.parametrize("name", KEPT)
def test_one_pass_is_f_and_f_prime_to_30_digits(name):
    """At 40 digits, the one-pass forms equal f and f' as printed alone to 1e-30 (relative to max(1, |value|)) for
    |E| <= 30, where no clamp acts; beyond the saturation bound (|E| = 100) to 2^-60, the bound saturate and
    share_saturated guarantee (a clamped term is its limit to beyond double precision there)."""
    (f_fused, df_fused), (f, df) = _one_pass(name)
    with mpmath.workdps(40):
        for point, tolerance in [(p, mpmath.mpf(10) ** -30) for p in (-30, -7.25, -1.5, -0.3, 0, 0.2, 1.75, 6.5, 30)] \
                + [(p, mpmath.mpf(2) ** -60) for p in (-100, 100)]:
            u = mpmath.mpf(point)
            for fused, exact in ((f_fused, f), (df_fused, df)):
                got, want = _mp(fused)(u), _mp(exact)(u)
                assert abs(got - want) <= tolerance * max(1, abs(want)), (name, point, got, want)


@pytest.mark.parametrize("name", KEPT)
@pytest.mark.parametrize("backend", ["numpy", "numba", "numba_blas", "numba_step"])
def test_the_cache_keeps_f_prime_of_E_and_backward_only_reads_it(name, backend, monkeypatch):
    """cache.dh_dE[t] is f'(E_t) with E_t = x_t V^T + h_{t-1} W^T + b recomputed here (float64, 1e-12 relative:
    the recomputed E_t differs from forward's by the order of its sums, a few ulp); backward twice gives the same
    gradients and leaves dh_dE as it was."""
    module = generated.load(name)
    if backend != "numpy" and (module.numba is None or backend == "numba_blas" and not support.NUMBA_BLAS):
        pytest.skip("Numba and SciPy (the fast extra) are not installed")  # pragma: no cover - the environment
    monkeypatch.setattr(module, "BACKEND", backend)
    x_, h0, V, W, b = rnn_inputs(5, 3, 4, 6)
    h, cache = module.forward(x_, h0, V, W, b)
    previous = np.concatenate([h0[None], h[:-1]])
    E_t = x_ @ V.T + previous @ W.T + b
    np.testing.assert_allclose(cache.dh_dE, module.activation_derivative(E_t), rtol=1e-12, atol=1e-14)
    kept = cache.dh_dE.copy()
    G = np.random.default_rng(1).standard_normal(h.shape)
    first, second = module.backward(G, cache), module.backward(G, cache)
    np.testing.assert_array_equal(cache.dh_dE, kept)
    for a, c in zip(first, second):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(module.derivatives(cache), kept)
    assert module.derivatives(cache) is not cache.dh_dE  # a copy: changing it cannot change the cache


@pytest.mark.parametrize("name", generated.ACTIVATIONS)
@pytest.mark.parametrize("backend", ["numpy", "numba", "numba_blas", "numba_step"])
def test_forward_for_inference_keeps_no_derivative(name, backend, monkeypatch):
    """forward(..., for_backward=False) gives the same h (to 4 eps: f alone, not the shared pass) and, where f' is
    kept, a cache without it, which backward and derivatives refuse saying why; where f' comes from h, it changes
    nothing."""
    module = generated.load(name)
    if backend != "numpy" and (module.numba is None or backend == "numba_blas" and not support.NUMBA_BLAS):
        pytest.skip("Numba and SciPy (the fast extra) are not installed")  # pragma: no cover - the environment
    monkeypatch.setattr(module, "BACKEND", backend)
    args = rnn_inputs(5, 3, 4, 6)
    h, cache = module.forward(*args)
    h_only, inference = module.forward(*args, for_backward=False)
    np.testing.assert_allclose(h_only, h, rtol=4 * np.finfo(float).eps, atol=4 * np.finfo(float).eps)
    if module.USES_OUTPUT:
        assert inference.dh_dE is None and cache.dh_dE is None
        module.backward(np.ones_like(h), inference)
        return
    assert inference.dh_dE is None and cache.dh_dE is not None
    for call in (lambda: module.backward(np.ones_like(h), inference), lambda: module.derivatives(inference),
                 lambda: module.jacobian(inference, 1)):
        with pytest.raises(ValueError, match="for_backward=False"):
            call()


@pytest.mark.parametrize("name", generated.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_pass_agrees_with_f_and_f_prime_called_separately(name, dtype):
    """activation_and_derivative(E) against activation(E) and f' (from E, or from h for the output forms), within
    8 eps of max(1, |value|): the same formulas with the shared terms computed once, and written in place."""
    module = generated.load(name)
    E_ = np.concatenate([np.linspace(-40, 40, 801), [-1e4, 1e4, 0.0]]).astype(dtype)
    with np.errstate(all="ignore"):
        h, d = module.activation_and_derivative(E_)
        f_alone = module.activation(E_)
        df_alone = module.activation_derivative(f_alone if module.USES_OUTPUT else E_)
    assert h.dtype == d.dtype == dtype
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(h, f_alone, rtol=8 * eps, atol=8 * eps)
    np.testing.assert_allclose(d, df_alone, rtol=8 * eps, atol=8 * eps)
    # in place: d may be E itself (as the forward step calls it)
    again = E_.copy()
    h2 = np.empty_like(again)
    with np.errstate(all="ignore"):
        module.activation_and_derivative(again, h2, again)
    np.testing.assert_array_equal(h2, h)
    np.testing.assert_array_equal(again, d)


def test_support_sigmoid_is_stable_and_writes_in_place():
    """Overflow-free in both tails, NaN through, exact at 0, the dtype kept, and ``out`` may be the input."""
    from generated._support import sigmoid as sig

    u = np.array([-np.inf, -800.0, -30.0, 0.0, 30.0, 800.0, np.inf, np.nan])
    with np.errstate(over="raise", divide="raise"):  # exp(-800) underflowing to 0 is the intended value
        got = sig(u)
    want = [0.0, 0.0, float(1 / (1 + mpmath.exp(30))), 0.5, float(1 / (1 + mpmath.exp(-30))), 1.0, 1.0]
    np.testing.assert_allclose(got[:-1], want, rtol=2 * np.finfo(float).eps, atol=0)
    assert np.isnan(got[-1])
    v = np.linspace(-20, 20, 9, dtype=np.float32)
    expected = sig(v)
    assert expected.dtype == np.float32
    assert sig(v, out=v) is v
    np.testing.assert_array_equal(v, expected)


@pytest.mark.parametrize("name", ["sigmoid", "silu", "gelu_tanh", "mish"])
def test_activations_take_0d_arrays_numpy_scalars_and_integers(name):
    """activation and activation_and_derivative of a 0-d array or a NumPy scalar (the in-place sigmoid once raised
    'return arrays must be of ArrayType' there), and of integers (computed in float64, as np.exp would)."""
    import generated
    from generated._support import sigmoid as sig

    module = generated.load(name)
    whole = module.activation(np.array([0.5, -3.0]))
    for value, dtype in ((np.asarray(0.5), np.float64), (np.float32(0.5), np.float32), (np.float64(0.5), np.float64)):
        h = module.activation(value)
        assert np.asarray(h).shape == () and np.asarray(h).dtype == dtype
        np.testing.assert_allclose(float(h), whole[0], rtol=4 * np.finfo(dtype).eps)
        h2, d = module.activation_and_derivative(np.asarray(value))
        np.testing.assert_allclose(float(h2), whole[0], rtol=4 * np.finfo(dtype).eps)
        assert np.isfinite(float(d))
    ints = sig(np.array([0, 2, -3]))
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, [0.5, 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(3.0))], rtol=2e-16)


# --- printer rules: expression in, exact text out ---------------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    (E**3, "(E*E*E)"),                                    # NumPy's power calls pow() for 3: ~90 ns an element
    (2 * E**4 + 1, "2*(E*E*E*E) + 1"),
    (E**-3, "1 / (E*E*E)"),
    (E**-2, "1 / E**2"),                                  # square: a fast path of NumPy's power
    (E**2, "E**2"),
    (E**9, "E**9"),                                       # past MAX_PRODUCT_POWER: pow
    (softplus(E), "(np.maximum(E, 0) + np.log1p(np.exp(-np.abs(E))))"),
    (softplus(2 * E), "np.logaddexp(0, 2*E)"),            # a compound argument would be computed three times
    (sp.Heaviside(E, 1), "(E >= 0)"),
    (sp.Heaviside(-E, 1), "(E <= 0)"),
])
def test_printer_rule(expr, expected):
    assert KernelPrinter().doprint(expr) == expected


def test_shared_sigmoids_rules():
    z = sp.exp(-sp.Abs(E))
    assert shared_sigmoids([sigmoid(E) * sigmoid(-E) * E]) == [E * z / (1 + z) ** 2]
    # sigmoid(E) alone stays one call; with sigmoid(-E) beside it, both are written in z = exp(-|E|)
    assert shared_sigmoids([E * sigmoid(E)]) == [E * sigmoid(E)]
    f, df = shared_sigmoids([E * sigmoid(E), sigmoid(-E)])
    assert f == E * sp.Max(z, sp.Heaviside(E, 1)) / (1 + z)
    assert df == sp.Max(z, sp.Heaviside(-E, 1)) / (1 + z)


def test_a_sigmoid_beside_its_softplus_is_written_from_it():
    """mish: sigmoid(E) = -expm1(-softplus(E)) (exp(-softplus(E)) = sigmoid(-E)), three passes on a softplus the pass
    computes anyway; a sigmoid of another argument is left alone."""
    (expr,) = shared_sigmoids([sigmoid(E) * softplus(E) + sigmoid(2 * E)])
    assert expr == -expm1(-softplus(E)) * softplus(E) + sigmoid(2 * E)


def test_share_saturated_takes_the_clamp_only_where_the_limit_is_reached():
    """gelu: f' is clamped to |E| <= 64, where Phi is 0 or 1 beyond double precision, so f's Phi(E) becomes
    Phi(clamp(E)), the term f' computes; a term that is not constant past the bound (exp(E)) keeps E."""
    clamp = sp.Max(sp.Min(E, 64), -64)
    df = ndtr(clamp) + clamp * sp.exp(-clamp**2 / 2)
    assert share_saturated(E * ndtr(E), df) == E * ndtr(clamp)
    assert share_saturated(E * sp.exp(E), df) == E * sp.exp(E)
    assert share_saturated(E * ndtr(E), ndtr(E)) == E * ndtr(E)  # no clamp: nothing to share


def test_cell_blocks_write_a_sigmoid_pair_in_one_exp():
    """The LSTM's tanh'(c) = 4 sigmoid(2c) sigmoid(-2c) in a cell's block: one exp(-2|c|), not two sigmoids."""
    from codegen.cell_printer import block_lines
    from derive.cell import Assignment

    a, c, g = sp.symbols("a c g", real=True)
    assert block_lines([Assignment(a, g + 4 * sigmoid(2 * c) * sigmoid(-2 * c))]) == [
        "_tmp0 = np.exp(-2*np.abs(c))", "a = 4*_tmp0/(_tmp0 + 1)**2 + g"]
