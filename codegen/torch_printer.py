"""[Derivation] -> PyTorch source text: the device target, printed from the same derivation as the NumPy kernels.

The NumPy kernels need the tensors on the host. For tensors elsewhere (CUDA), ``interop.torch_device`` runs the
same recurrence in PyTorch operations, with the activation f(E) and its derivative (in terms of h when the
derivation found that form, else of E) printed here from the derivation's SymPy expressions, after the same
passes as the NumPy printer (``codegen.passes.prepare``: float constants, clamped exp branches).
"""
import sympy as sp
from sympy.printing.pytorch import TorchPrinter

from codegen.passes import indicator, prepare
from derive.parse import X as x_symbol

E_symbol = sp.Symbol("E", real=True)


class DeviceTorchPrinter(TorchPrinter):
    """SymPy's TorchPrinter with the derivation's named functions, bounds that may be Python numbers, and number
    branches of a Piecewise in the dtype of ``arg`` (the name of the function's argument)."""

    def __init__(self, arg, settings=None):
        super().__init__(settings)
        self.arg = arg

    def _print_Piecewise(self, expr):
        if expr.args[-1].cond is not sp.true:
            return super()._print_Piecewise(expr)
        text = self._branch(expr.args[-1].expr)
        for value, cond in reversed(expr.args[:-1]):
            text = f"torch.where({self._print(cond)}, {self._branch(value)}, {text})"
        return text

    def _branch(self, value):
        # torch.where(c, 1, 0.01) makes a tensor of the default dtype (float32): 0.01 would lose its digits
        return f"torch.full_like({self.arg}, {self._print(value)})" if value.is_number else self._print(value)

    def _print_sigmoid(self, expr):
        return f"torch.sigmoid({self._print(expr.args[0])})"

    def _print_softplus(self, expr):
        # logaddexp(u, 0): no overflow, and no threshold cut-off (F.softplus returns u above 20: 1e-10 off)
        arg = self._print(expr.args[0])
        return f"torch.logaddexp({arg}, torch.zeros_like({arg}))"

    # the numerics pass's stable forms (codegen.passes): torch has each of them
    def _print_expm1(self, expr):
        return f"torch.expm1({self._print(expr.args[0])})"

    def _print_log1p(self, expr):
        return f"torch.log1p({self._print(expr.args[0])})"

    def _print_ndtr(self, expr):
        return f"torch.special.ndtr({self._print(expr.args[0])})"

    def _print_indicator(self, expr):
        # codegen.passes.piecewise_arithmetic's [c] (or [not c]: NaN gives 1) as 0/1 in the dtype of c's tensor
        u, edge, op, holds = expr.args
        u = self._print(u)
        mask = f"({u} {indicator.OPS[op]} {self._print(edge)})"
        return f"{mask}.to({u}.dtype)" if holds else f"(~{mask}).to({u}.dtype)"

    def _print_Heaviside(self, expr):
        # only as codegen.passes.shared_sigmoids writes it, max(z, [u >= 0]): a boolean tensor, which torch.maximum
        # promotes to 0/1 in z's dtype (as np.maximum does in the NumPy target)
        u, at_zero = expr.args
        assert at_zero == 1, expr
        if u.could_extract_minus_sign():  # [-u >= 0] as (u <= 0): no negation pass
            return f"({self._print(-u)} <= 0)"
        return f"({self._print(u)} >= 0)"

    def _print_Max(self, expr):
        return self._clamp(expr, "min", "torch.maximum")

    def _print_Min(self, expr):
        return self._clamp(expr, "max", "torch.minimum")

    def _clamp(self, expr, side, pairwise):
        # torch.maximum/minimum take tensors only; a number bound (clamp_branches' edge) is torch.clamp's
        numbers = [a for a in expr.args if a.is_number]
        others = [self._print(a) for a in expr.args if not a.is_number]
        text = others[0]
        for other in others[1:]:
            text = f"{pairwise}({text}, {other})"
        if numbers:
            text = f"torch.clamp({text}, {side}={self._print(numbers[0])})"
        return text


MODULE = '''\
"""PyTorch elementwise functions of the activation {name!r}, printed by codegen.torch_printer from its derivation."""
import torch

USES_OUTPUT = {uses_output}


def activation(E):
    """f(E), elementwise, on E's device and in its dtype."""
    return torch.zeros_like(E) + ({f})


def activation_derivative({arg}):
    """f'(E), elementwise, from {what}."""
    return torch.zeros_like({arg}) + ({df})
'''


def torch_source(derivation):
    """The source of a module with ``activation(E)``, ``activation_derivative(h or E)`` and ``USES_OUTPUT``."""
    s = derivation.scalar
    f = DeviceTorchPrinter("E").doprint(prepare(s.f).subs(x_symbol, E_symbol))
    if derivation.uses_output:
        arg, what, df = "h", "the output h = f(E)", DeviceTorchPrinter("h").doprint(prepare(s.df_h))
    else:
        arg, what = "E", "the pre-activation E"
        df = DeviceTorchPrinter("E").doprint(prepare(s.df).subs(x_symbol, E_symbol))
    return MODULE.format(name=derivation.name, uses_output=derivation.uses_output, f=f, arg=arg, what=what, df=df)
