"""The derive stage: the Jacobian and BPTT equations SymPy derives, the output forms it finds, kink conventions."""
import mpmath
import numpy as np
import pytest
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from derive import CATALOGUE, Activation, DerivationError, derive, parse_expression
from derive.elementwise import H as h_sym, derive_elementwise
from derive.functions import to_elementary
from derive.parse import X as x
from derive.recurrence import E_t, V, W, b_h, delta_next, delta_t, dim_D, dim_H, g_t, h_prev, x_t

BY_NAME = {a.name: a for a in CATALOGUE}


@pytest.fixture(scope="module")
def derivations():
    return {a.name: derive(a) for a in CATALOGUE}


def _explicit(expr, sizes, values):
    """Substitute concrete sizes and matrices, apply elementwise functions, and evaluate to a numeric Matrix."""
    e = expr.subs(sizes).subs({k.subs(sizes): v for k, v in values.items()})
    e = e.replace(ElementwiseApplyFunction, lambda fn, arg: sp.Matrix(arg.as_explicit()).applyfunc(fn))
    return sp.Matrix(e.doit().as_explicit()).evalf(30)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "elu", "softplus", "silu", "gelu", "mish", "sin"])
def test_jacobian_matches_elementwise_jacobian_on_concrete_sizes(derivations, name):
    """diag(f'(E_t)) W, as SymPy derived it, equals Matrix.jacobian of the unrolled step at H = 3, D = 2."""
    d = derivations[name]
    Hn, Dn = 3, 2
    rng = np.random.default_rng(1)

    def rational_matrix(rows, cols):
        return sp.Matrix(rows, cols, [sp.Rational(int(v), 7) for v in rng.integers(-7, 8, rows * cols)])

    hp = sp.Matrix(sp.symbols("p0:3", real=True))
    xv, Vv, Wv, bv = rational_matrix(Dn, 1), rational_matrix(Hn, Dn), rational_matrix(Hn, Hn), rational_matrix(Hn, 1)
    f = sp.Lambda(x, to_elementary(d.f))
    E = Vv * xv + Wv * hp + bv
    reference = E.applyfunc(f).jacobian(hp)
    point = {s: sp.Rational(k + 1, 5) for k, s in enumerate(hp)}
    reference = reference.subs(point).evalf(30)
    E_value = E.subs(point)
    derived = _explicit(d.jacobian, {dim_H: Hn, dim_D: Dn},
                        {E_t: sp.ImmutableMatrix(E_value), W: sp.ImmutableMatrix(Wv)})
    derived = derived.applyfunc(lambda v: to_elementary(v).evalf(30))
    assert (derived - reference).norm() < 1e-25


def test_jacobian_is_numerator_layout_diag_fprime_times_W(derivations):
    """The seed's form: dh_t/dE_t = diag(f'(E_t)), dE_t/dh_{t-1} = W, and their product in that order."""
    d = derivations["tanh"]
    fprime = ElementwiseApplyFunction(sp.Lambda(x, 1 - sp.tanh(x)**2), E_t)
    assert d.dh_dE == sp.DiagMatrix(fprime)
    assert d.dE_dh_prev == W
    assert d.jacobian == sp.DiagMatrix(fprime) * W
    assert d.pre_activation == V * x_t + W * h_prev + b_h


def test_bptt_equations_are_the_seeds(derivations):
    """delta_t = diag(f'(E_t)) (g_t + W^T delta_{t+1}); dV, dW, db, dx, dh_0 as in the seed."""
    for d in derivations.values():
        assert d.dL_dh == g_t + W.T * delta_next
        assert d.delta == d.dh_dE * (g_t + W.T * delta_next)
        assert d.grad_V == delta_t * x_t.T
        assert d.grad_W == delta_t * h_prev.T
        assert d.grad_b == delta_t
        assert d.grad_x == V.T * delta_t
        assert d.grad_h_prev == W.T * delta_t


EXPECTED_OUTPUT_FORMS = {
    "identity": sp.Integer(1),
    "tanh": 1 - h_sym**2,
    "sigmoid": h_sym * (1 - h_sym),
    "relu": sp.Piecewise((1, h_sym > 0), (0, True)),
    "leaky_relu": sp.Piecewise((1, h_sym > 0), (sp.Rational(1, 100), True)),
    "elu": sp.Piecewise((1, h_sym > 0), (h_sym + 1, True)),
    "softplus": 1 - sp.exp(-h_sym),
    "softsign": sp.Piecewise(((h_sym - 1)**2, h_sym >= 0), ((h_sym + 1)**2, True)),
}
NO_OUTPUT_FORM = ["silu", "gelu", "gelu_tanh", "mish", "sin"]


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUT_FORMS))
def test_output_form_is_found(derivations, name):
    assert sp.simplify(derivations[name].df_h - EXPECTED_OUTPUT_FORMS[name]) == 0


def test_selu_output_form_is_found(derivations):
    assert derivations["selu"].uses_output


def test_every_catalogue_entry_is_classified():
    assert set(EXPECTED_OUTPUT_FORMS) | {"selu"} | set(NO_OUTPUT_FORM) == set(BY_NAME)


@pytest.mark.parametrize("name", NO_OUTPUT_FORM)
def test_non_monotone_activations_keep_E(derivations, name):
    assert derivations[name].df_h is None


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUT_FORMS) + ["selu"])
def test_every_found_output_form_holds_at_random_points(derivations, name):
    """Independent of the engine's own check: g(f(x)) = f'(x) at 200 random points, 30 digits."""
    d = derivations[name]
    f = sp.lambdify(x, to_elementary(d.f), "mpmath")
    df = sp.lambdify(x, to_elementary(d.df), "mpmath")
    g = sp.lambdify(h_sym, to_elementary(d.df_h), "mpmath")
    rng = np.random.default_rng(0)
    with mpmath.workdps(30):
        for v in rng.standard_normal(200) * 5:
            v = mpmath.mpf(float(v))
            assert abs(g(f(v)) - df(v)) < mpmath.mpf(10)**-20


@pytest.mark.parametrize("name, at_zero", [("relu", 0), ("leaky_relu", sp.Rational(1, 100)), ("elu", 1),
                                           ("selu", BY_NAME["selu"].params[sp.Symbol("lambda", positive=True)]
                                            * BY_NAME["selu"].params[sp.Symbol("alpha", positive=True)])])
def test_derivative_at_kink_follows_pytorch(derivations, name, at_zero):
    assert sp.simplify(derivations[name].df.subs(x, 0) - at_zero) == 0


def test_parsed_max_takes_relu_convention():
    """max(x, 0) differentiates to Heaviside; the engine sets Heaviside(0) = 0, as relu'(0) = 0 in PyTorch."""
    e = derive_elementwise(parse_expression("max(x, 0)"))
    assert e.df.subs(x, 0) == 0 and e.df.subs(x, 1) == 1
    assert e.df_h is not None and e.kinks == (0,)


def test_gamma(derivations):
    assert derivations["tanh"].scalar.gamma == 1
    assert derivations["sigmoid"].scalar.gamma == sp.Rational(1, 4)
    assert abs(float(derivations["silu"].scalar.gamma) - 1.0998393) < 1e-6
    assert derive_elementwise(parse_expression("x**3")).gamma == sp.oo


@pytest.mark.parametrize("text, reason", [
    ("3", "constant"),
    ("pi + e", "constant"),
    ("x - x", "constant"),
])
def test_derivation_refuses_constants(text, reason):
    with pytest.raises(DerivationError, match=reason):
        derive(Activation("bad", parse_expression(text)))


def test_derivation_refuses_other_symbols():
    with pytest.raises(DerivationError, match="other than x"):
        derive(Activation("bad", x + sp.Symbol("y")))


@pytest.mark.parametrize("text, reason", [
    ("log(x)", "not real and finite on the whole real line"),
    ("1/x", "not real and finite on the whole real line"),
    ("sqrt(abs(x))", "not differentiable everywhere"),
])
def test_derivation_refuses_undefined_or_non_differentiable(text, reason):
    with pytest.raises(DerivationError, match=reason):
        derive(Activation("bad", parse_expression(text)))


def test_derivation_refuses_a_derivative_without_closed_form():
    with pytest.raises(DerivationError, match="cannot differentiate: g"):
        derive(Activation("bad", sp.Function("g")(x) + x))
