"""Derivation objects -> plain text in the seed's notation, for kernel comments and module docstrings.

``diag(f'(E_t)) W`` rather than SymPy's ``DiagMatrix(Lambda(x, 1 - tanh(x)**2).(E_t))*W``: the activation and its
derivative are written out once, where they are defined, and referred to by name (``names``) everywhere else.
Numbers stay exact (``sqrt(2)/2``, ``1/100``); a rational too long to read (selu's 32-digit constants multiplied)
prints as the shortest decimal of the nearest double, which is what a kernel can use of it. A Piecewise prints as Python's conditional expression,
``x if x > 0 else x/100``.
"""
import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

READABLE_DIGITS = 12  # a rational whose numerator or denominator is longer prints as a decimal
DECIMAL_DIGITS = 30  # a long rational is rounded from this many digits to the nearest double


class DerivationTextPrinter(StrPrinter):
    """StrPrinter with the seed's matrix notation; each override says how it reads."""

    def __init__(self, names=None, **settings):
        super().__init__(settings)
        self.names = names or {}  # {expression in x: its name}: f(E_t) instead of the expression again

    def _print_ElementwiseApplyFunction(self, expr):
        # f.(E_t) prints as f(E_t) when f has a name, else as its body with E_t in place of x: tanh(E_t)
        (var,), body = expr.function.variables, expr.function.expr
        arg = self._print(expr.expr)
        if body in self.names:
            return f"{self.names[body]}({arg})"
        return self._print(body.subs(var, sp.Symbol(arg)))

    def _print_DiagMatrix(self, expr):
        return f"diag({self._print(expr.args[0])})"

    def _print_MatMul(self, expr):
        # juxtaposition, as in the seed: W^T delta_{t+1}
        return " ".join(self.parenthesize(a, PRECEDENCE["Mul"]) for a in expr.args)

    def _print_Transpose(self, expr):
        return f"{self.parenthesize(expr.arg, PRECEDENCE['Pow'])}^T"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Piecewise(self, expr):
        # Python's conditional expression, in parentheses: it binds looser than any operator
        return f"({self._conditional(expr)})"

    def _conditional(self, expr):
        (value, cond), rest = expr.args[0], expr.args[1:]
        otherwise = self._print(rest[0].expr) if len(rest) == 1 and rest[0].cond is sp.true \
            else self._conditional(sp.Piecewise(*rest))
        return f"{self._print(value)} if {self._print(cond)} else {otherwise}"

    def _print_Abs(self, expr):
        # the spelling parse_expression reads back
        return f"abs({self._print(expr.args[0])})"

    def _print_Relational(self, expr):
        return f"{self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)}"


def text(expr, names=None):
    """The plain-text form of a derivation object; ``names`` maps expressions in x to the names they print as."""
    printer = DerivationTextPrinter(names)
    if isinstance(expr, sp.Basic):  # exact while readable; selu's products of 32-digit constants as a double
        expr = expr.xreplace({r: sp.Float(r, DECIMAL_DIGITS) for r in expr.atoms(sp.Rational)
                              if max(len(str(abs(r.p))), len(str(r.q))) > READABLE_DIGITS})
    if isinstance(expr, sp.Piecewise):  # at the top level a conditional needs no parentheses
        return printer._conditional(expr)
    return printer.doprint(expr)

