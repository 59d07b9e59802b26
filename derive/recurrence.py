"""Scalar derivation -> the RNN's: E_t, h_t, the Jacobian dh_t/dh_{t-1}, and the BPTT equations, as SymPy objects.

The recurrence is built from SymPy matrix symbols of symbolic size (x_t: D x 1, h_{t-1}: H x 1, V: H x D,
W: H x H, b_h: H x 1) and differentiated by SymPy:

    E_t = V x_t + W h_{t-1} + b_h,   h_t = f.(E_t)   (f applied elementwise)
    dh_t/dE_t = diag(f'(E_t)),   dE_t/dh_{t-1} = W,   dh_t/dh_{t-1} = diag(f'(E_t)) W

SymPy's matrix derivative is in denominator layout (d(W h)/dh = W^T); we transpose each factor into the seed's
numerator layout and multiply them (the chain rule). SymPy also differentiates the composite f.(E_t(h_{t-1}))
directly; the two must agree (checked here, on every derivation).

The BPTT equations come from the same objects. With delta_t = dL/dE_t and g_t = dL/dh_t taken directly:

    dL/dh_t  = g_t + (dE_{t+1}/dh_t)^T delta_{t+1} = g_t + W^T delta_{t+1}
    delta_t  = (dh_t/dE_t)^T dL/dh_t = (g_t + W^T delta_{t+1}) * f'(E_t)
    and each parameter's gradient is the derivative of the pairing tr(delta_t^T E_t), summed over t:
    dV = sum_t delta_t x_t^T,  dW = sum_t delta_t h_{t-1}^T,  db = sum_t delta_t,  dx_t = V^T delta_t,
    dh_0 = W^T delta_1.
"""
from dataclasses import dataclass

import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from derive.catalogue import Activation, check_name
from derive.elementwise import H as h_scalar, Elementwise, derive_elementwise, show
from derive.errors import DerivationError
from derive.parse import X as x_scalar

# Symbolic sizes: hidden H, input D.
dim_H, dim_D = sp.symbols("H D", integer=True, positive=True)
x_t = sp.MatrixSymbol("x_t", dim_D, 1)
h_prev = sp.MatrixSymbol("h_{t-1}", dim_H, 1)
V = sp.MatrixSymbol("V", dim_H, dim_D)
W = sp.MatrixSymbol("W", dim_H, dim_H)
b_h = sp.MatrixSymbol("b_h", dim_H, 1)
E_t = sp.MatrixSymbol("E_t", dim_H, 1)
h_t = sp.MatrixSymbol("h_t", dim_H, 1)
g_t = sp.MatrixSymbol("g_t", dim_H, 1)           # dL/dh_t taken directly (the loss's own term)
delta_t = sp.MatrixSymbol("delta_t", dim_H, 1)   # dL/dE_t
delta_next = sp.MatrixSymbol("delta_{t+1}", dim_H, 1)


@dataclass(frozen=True)
class Derivation:
    """Everything derived for one activation: the scalar parts (``scalar``) and the matrix equations.

    Matrix fields are SymPy matrix expressions in the symbols of this module; the ``grad_*`` fields are one time
    step's contribution (summed over t by the kernels).
    """

    activation: Activation
    scalar: Elementwise
    pre_activation: sp.MatrixExpr      # E_t = V x_t + W h_{t-1} + b_h
    output: sp.MatrixExpr              # h_t = f.(E_t)
    dh_dE: sp.MatrixExpr               # diag(f'(E_t))
    dE_dh_prev: sp.MatrixExpr          # W
    jacobian: sp.MatrixExpr            # diag(f'(E_t)) W
    dL_dh: sp.MatrixExpr               # g_t + W^T delta_{t+1}
    delta: sp.MatrixExpr               # diag(f'(E_t)) (g_t + W^T delta_{t+1})
    grad_V: sp.MatrixExpr              # delta_t x_t^T
    grad_W: sp.MatrixExpr              # delta_t h_{t-1}^T
    grad_b: sp.MatrixExpr              # delta_t
    grad_x: sp.MatrixExpr              # V^T delta_t
    grad_h_prev: sp.MatrixExpr         # W^T delta_t

    # Shorthands the printers use.
    @property
    def name(self):
        return self.activation.name

    @property
    def f(self):
        return self.scalar.f

    @property
    def df(self):
        return self.scalar.df

    @property
    def df_h(self):
        return self.scalar.df_h

    @property
    def uses_output(self):
        """Whether the kernel takes f' from h_t (and keeps no E_t): when a form in h exists and the activation does
        not ask to keep its input (``Activation.keep_input``, accuracy over memory)."""
        return self.scalar.uses_output and not self.activation.keep_input


f_generic = sp.Function("f")  # the activation, left undefined while the matrix calculus is done


def _elementwise(expr_in_x, arg):
    return ElementwiseApplyFunction(sp.Lambda(x_scalar, expr_in_x), arg)


def _numerator(d):
    """SymPy's denominator-layout derivative -> the seed's numerator layout."""
    return d.T.doit() if isinstance(d, sp.MatrixExpr) else d


def _instantiate(expr, scalar):
    """Fill the generic f and f' in a matrix expression with this activation's, written as Lambdas of ``x``.

    The matrix calculus is done once for an undefined f (the structure diag(f'(E_t)) W holds for every f), and
    SymPy's fresh Dummy variables are replaced by ``x``, so derivations compare with ``==`` and print cleanly.
    """
    def fill(fn, arg):
        (var,), body = fn.variables, fn.expr
        # x for the Dummy first, then f and f' put in whole: substituting into f and f' instead rebuilds them
        # level by level, exponentially slowly for deep nests (tanh 12 deep: minutes)
        body = body.xreplace({var: x_scalar})
        body = body.xreplace({sp.Derivative(f_generic(x_scalar), x_scalar): scalar.df, f_generic(x_scalar): scalar.f})
        return ElementwiseApplyFunction(sp.Lambda(x_scalar, body), arg)

    return expr.replace(ElementwiseApplyFunction, fill)


def derive(activation, progress=None):
    """Activation -> Derivation. Raises DerivationError (a ValueError) when the activation cannot be derived.

    ``progress``, when given, is called with each step's name as it starts (``derive.elementwise.STEPS``, then
    "matrix calculus"): a caller that runs this under a time limit can say where it ran out.
    """
    if not isinstance(activation, Activation):
        raise DerivationError(f"derive takes an Activation, got {type(activation).__name__}: {activation!r:.80}")
    check_name(activation.name)  # it becomes a module name and file name: refuse it before any work
    try:
        scalar = derive_elementwise(activation.bound(), progress)
    except DerivationError as e:
        raise DerivationError(f"{activation.name}: {e}") from e.__cause__
    if progress is not None:
        progress("matrix calculus")
    try:
        return _matrix_calculus(activation, scalar)
    except DerivationError:
        raise
    except Exception as e:  # SymPy's matrix calculus does not fail for any f today: still no raw traceback
        raise DerivationError(f"{activation.name}: activation {show(scalar.f)}: SymPy failed in step "
                              f"'matrix calculus' ({type(e).__name__}: {show(e, 200)})") from e


def _matrix_calculus(activation, scalar):
    """The Jacobian and the BPTT equations for the scalar derivation ``scalar``."""
    pre_activation = V * x_t + W * h_prev + b_h
    output_generic = ElementwiseApplyFunction(f_generic, E_t)

    # The chain rule, one factor at a time, each derived by SymPy.
    dh_dE_generic = _numerator(output_generic.diff(E_t))
    dE_dh_prev = _numerator(pre_activation.diff(h_prev))
    jacobian_generic = dh_dE_generic * dE_dh_prev
    direct = _numerator(ElementwiseApplyFunction(f_generic, pre_activation).diff(h_prev))
    output = _instantiate(output_generic, scalar)
    dh_dE = _instantiate(dh_dE_generic, scalar)
    jacobian = dh_dE * dE_dh_prev
    if _instantiate(direct, scalar) != jacobian.subs(E_t, pre_activation):
        raise DerivationError(f"{activation.name}: the chain rule gives {jacobian_generic}, SymPy's direct "
                              f"derivative {direct}: they must agree")

    # BPTT: dL/dh_t collects the loss's own term and what flows back from E_{t+1} = ... + W h_t + ...
    dE_next_dh = _numerator(pre_activation.diff(h_prev))  # the same step one later: dE_{t+1}/dh_t
    dL_dh = g_t + dE_next_dh.T * delta_next
    delta = dh_dE.T * dL_dh

    def grad(wrt):
        """d tr(delta_t^T E_t) / d wrt: one step's contribution to dL/d wrt."""
        return sp.Trace(delta_t.T * pre_activation).diff(wrt)

    return Derivation(
        activation=activation, scalar=scalar,
        pre_activation=pre_activation, output=output, dh_dE=dh_dE, dE_dh_prev=dE_dh_prev, jacobian=jacobian,
        dL_dh=dL_dh, delta=delta,
        grad_V=grad(V), grad_W=grad(W), grad_b=grad(b_h), grad_x=grad(x_t), grad_h_prev=grad(h_prev),
    )


__all__ = ["Derivation", "derive", "h_scalar"]
