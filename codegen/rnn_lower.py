"""Derivation -> RnnKernel: the vanilla RNN's kernels as a typed description, printed by codegen.rnn_printer.

    # [Derivation] -> [RnnKernel]     lower_rnn(derivation)

The same parts as a cell's lowering (codegen.lower), for the one cell h' = f(V x + W h + b) with f the activation's
derived expression: every matrix product a ``MatMul`` (codegen.lower), every elementwise line a
``derive.cell.Assignment`` (SymPy, in the array names of the step), each tagged with the derivation step it
computes (a field of derive.recurrence.Derivation: ``pre_activation``, ``output``, ``dh_dE``, ``delta``, ...),
whose text becomes the printed line's comment. Nothing here is text: the printer decides how each part is written
for its target (in place with ``out=`` for NumPy; fused loops for Numba).

The output-form trick: when f' has a form in the output h (``Derivation.uses_output``), f' is written in h_t and the
forward pass keeps only h (E_t is formed in h[t] and replaced by h_t). Else the forward step computes f(E_t) and
f'(E_t) in one pass (``fused_derivative``: their common subexpressions once, codegen.numpy_printer.pair_prepared) and
keeps f'(E_t) in place of E_t (the cache's ``dh_dE``, the same T x N x H memory), so the backward pass does no
transcendental work.
"""
from dataclasses import dataclass

import sympy as sp

from codegen.lower import MatMul
from derive.cell import Assignment
from derive.elementwise import H as h_symbol
from derive.parse import X as x_symbol

R = dict(real=True)
E, E_t, W_h, h_t, b = (sp.Symbol(n, **R) for n in ("E", "E_t", "W_h", "h_t", "b"))
delta, delta_t, dh_t, dL_dh, W_delta = (sp.Symbol(n, **R) for n in ("delta", "delta_t", "dh_t", "dL_dh", "W_delta"))
d_t = sp.Symbol("d", **R)  # f'(E_t) of one step, the diagonal of dh_t/dE_t
dh_dE_t = sp.Symbol("dh_dE_t", **R)  # the same, computed by the forward step and kept in the cache


@dataclass(frozen=True)
class Line:
    """One part of a kernel: ``value`` (an Assignment, or a MatMul into the array ``target``) computing the
    derivation's step ``step`` (a Derivation field name, or None for a partial result such as W h_{t-1})."""

    target: str
    value: object
    step: str


@dataclass(frozen=True)
class RnnKernel:
    """Everything a printer needs to write one activation's RNN module.

    ``keep``: "h" (f' from the output, nothing but h kept) or "dh_dE" (f'(E_t), computed by the forward step, kept
    for backward); ``f`` and ``df``: the activation and its derivative as scalar SymPy expressions in ``f_arg`` and
    ``df_arg`` (x, or h for the output form). The forward pass: ``hoisted`` (V x_t + b for every t before the loop),
    then per step ``step_product`` (W h_{t-1}), ``pre_activation``, ``output`` and, when f' is kept,
    ``fused_derivative`` (f'(E_t) in the same pass as h_t, written over E_t). The backward pass: ``derivative``
    (f'(h_t) for every t at once, filled in place with delta; or, when kept, delta allocated and f'(E_t) read from
    the cache), then per step from t = T down ``dL_dh``, ``delta``, ``carry`` (W^T delta_t, which is
    dh_0 after the loop); after it ``weight_grads`` (one product each over all steps), ``bias_grad`` (delta summed)
    and ``input_grad``. ``jacobian``: the one-step Jacobian diag(d) W as (factor, parameter), in every product
    form (jacobian, products of Jacobians, pushforward, pullback)."""

    name: str
    keep: str
    f: sp.Expr
    f_arg: sp.Symbol
    df: sp.Expr
    df_arg: sp.Symbol
    hoisted: tuple           # (Line, ...): E = V x_t for all t (a MatMul), then E += b
    step_product: Line       # W h_{t-1}, one step
    pre_activation: Line     # E_t = E_t + W h_{t-1}
    output: Line             # h_t = f(E_t)
    fused_derivative: object  # Line dh_dE_t = f'(E_t) in the pass of ``output`` (keep "dh_dE"), or None
    derivative: Line         # delta = f'(h) for all t, or delta = an empty array (f'(E_t) read per step)
    dL_dh: Line              # dL/dh_t = g_t + W^T delta_{t+1}
    delta: Line              # delta_t = f'(E_t) dL/dh_t
    carry: Line              # W^T delta_t, one step
    weight_grads: tuple      # ((param, Line), ...)
    bias_grad: Line          # db = sum over t and the batch of delta
    input_grad: Line         # dx = delta V, all steps
    jacobian: tuple          # ((factor symbol, param), ...): dh_t/dh_{t-1} = diag(factor) param
    derivation: object       # the Derivation, for comments


def lower_rnn(d):
    """Derivation -> RnnKernel (see the module docstring)."""
    s = d.scalar
    kept_h = d.uses_output
    if kept_h:
        df, df_arg, keep = s.df_h, h_symbol, "h"
    else:
        df, df_arg, keep = s.df, x_symbol, "dh_dE"
    add = lambda *terms: sp.Add(*terms, evaluate=False)  # noqa: E731 - the order the step reads them in
    mul = lambda *factors: sp.Mul(*factors, evaluate=False)  # noqa: E731
    return RnnKernel(
        d.name, keep, s.f, x_symbol, df, df_arg,
        hoisted=(Line("E", MatMul("x", False, "V", True, "all"), None), Line("E", Assignment(E, add(E, b)), None)),
        step_product=Line("W_h", MatMul("h_prev", False, "W", True, "one"), None),
        pre_activation=Line("E_t", Assignment(E_t, add(E_t, W_h)), "pre_activation"),
        output=Line("h_t", Assignment(h_t, s.f.subs(x_symbol, E_t)), "output"),
        fused_derivative=None if kept_h else Line("E_t", Assignment(dh_dE_t, df.subs(df_arg, E_t)), "dh_dE"),
        derivative=Line("delta", Assignment(delta, df.subs(df_arg, h_symbol) if kept_h else sp.S.Zero), "dh_dE"),
        dL_dh=Line("dL_dh", Assignment(dL_dh, add(dh_t, W_delta)), "dL_dh"),
        delta=Line("delta_t", Assignment(delta_t, mul(delta_t if kept_h else dh_dE_t, dL_dh)), "delta"),
        carry=Line("W_delta", MatMul("delta", False, "W", False, "one"), "grad_h_prev"),
        weight_grads=(("V", Line("dV", MatMul("delta", True, "x", False, "all"), "grad_V")),
                      ("W", Line("dW", MatMul("delta", True, "h_prev", False, "all"), "grad_W"))),
        bias_grad=Line("db", Assignment(sp.Symbol("db", **R), sp.Sum(delta, (sp.Symbol("t"), 1, sp.Symbol("T")))),
                       "grad_b"),
        input_grad=Line("dx", MatMul("delta", False, "V", False, "all"), "grad_x"),
        jacobian=((d_t, "W"),),
        derivation=d,
    )
