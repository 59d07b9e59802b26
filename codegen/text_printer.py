"""Derivation objects -> plain text in the seed's notation, for kernel comments and module docstrings.

``diag(1 - tanh(E_t)**2) W`` rather than SymPy's ``DiagMatrix(Lambda(x, 1 - tanh(x)**2).(E_t))*W``.
"""
import sympy as sp
from sympy.printing.str import StrPrinter

from codegen.passes import float_constants


class DerivationTextPrinter(StrPrinter):
    """StrPrinter with the seed's matrix notation; each override says how it reads."""

    def _print_ElementwiseApplyFunction(self, expr):
        # f.(E_t) prints as f with E_t in place of x: tanh(E_t)
        (var,), body = expr.function.variables, expr.function.expr
        return self._print(float_constants(body).subs(var, sp.Symbol(self._print(expr.expr))))

    def _print_DiagMatrix(self, expr):
        return f"diag({self._print(expr.args[0])})"

    def _print_MatMul(self, expr):
        # juxtaposition, as in the seed: W^T delta_{t+1}
        return " ".join(self.parenthesize(a, sp.printing.precedence.PRECEDENCE["Mul"]) for a in expr.args)

    def _print_Transpose(self, expr):
        return f"{self.parenthesize(expr.arg, sp.printing.precedence.PRECEDENCE['Pow'])}^T"

    def _print_Float(self, expr):
        return repr(float(expr))


def text(expr):
    """The plain-text form of a derivation object (numbers as short decimals)."""
    if isinstance(expr, sp.Expr) and not isinstance(expr, sp.MatrixExpr):
        expr = float_constants(expr)
    return DerivationTextPrinter().doprint(expr)


def scalar_text(expr, old, new):
    """A scalar expression with symbol ``old`` renamed ``new`` (f'(x) -> f'(E_t))."""
    return text(float_constants(expr).subs(old, sp.Symbol(new)))
