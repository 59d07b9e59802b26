r"""Derivation objects -> LaTeX in the seed's notation (E_t, h_t, V, W, b_h, \operatorname{diag}).

Overrides of SymPy's LatexPrinter, each for one reason:
- ``ElementwiseApplyFunction``: f applied to E_t prints as f with E_t for x (tanh(E_t)), not SymPy's x |-> ... map;
- ``DiagMatrix``: \operatorname{diag}(...), the seed's notation; with ``fprime_symbol`` set, diag(f'(E_t)), so
  long derivatives are written out once and referred to afterwards;
- ``MatrixSymbol``: the seed's names (delta_{t+1} -> \delta_{t+1});
- ``Transpose``: ^{\top};
- ``sigmoid`` and ``softplus``: \sigma and \operatorname{softplus};
- ``Float``: ten significant digits (SymPy prints 17);
- ``Phi`` and ``phi`` (``codegen.latex_passes``): \Phi and \varphi, the standard normal's distribution and density;
- ``Add`` term order: a positive number first, as textbooks write 1 + |x| (SymPy writes |x| + 1);
- ``Mul`` factor order: sums and cases after the other factors, as in sigma(x)(1 - sigma(x)) (SymPy puts them first),
  and the symbols named in ``named_order`` first, in that order (SELU's lambda alpha, not SymPy's alphabetical order);
and before printing, ``decimal_rationals`` turns rationals with a denominator past 1000 (SELU's constants,
GELU's 0.044715) into such decimals, not 30-digit fractions.
Exact numbers stay exact otherwise (\frac{\sqrt{2}}{2}), unlike the kernels, which need floats.
"""
import sympy as sp
from sympy.printing.latex import LatexPrinter

NAMES = {"delta_t": r"\delta_t", "delta_1": r"\delta_1", "delta_{t+1}": r"\delta_{t+1}", "h_{t-1}": "h_{t-1}",
         "x_t": "x_t", "E_t": "E_t", "h_t": "h_t", "g_t": "g_t", "b_h": "b_h", "V": "V", "W": "W"}


class DerivationLatexPrinter(LatexPrinter):
    """LaTeX of derivation objects. ``fprime_symbol=True`` abbreviates diag(f'(.)) to \\operatorname{diag}(f'(.));
    ``named_order`` (symbol names) puts those symbols first in a product, in that order."""

    _default_settings = {**LatexPrinter._default_settings, "fprime_symbol": False, "named_order": ()}

    def _print_ElementwiseApplyFunction(self, expr):
        (var,), body = expr.function.variables, expr.function.expr
        return self._print(decimal_rationals(body).subs(var, sp.Symbol(self._print(expr.expr))))

    def _print_DiagMatrix(self, expr):
        inner = expr.args[0]
        if self._settings["fprime_symbol"]:
            return rf"\operatorname{{diag}}\left(f'({self._print(inner.expr)})\right)"
        return rf"\operatorname{{diag}}\left({self._print(inner)}\right)"

    def _print_MatrixSymbol(self, expr):
        return NAMES.get(expr.name, expr.name)

    def _print_Transpose(self, expr):
        return rf"{self.parenthesize(expr.arg, sp.printing.precedence.PRECEDENCE['Pow'])}^{{\top}}"

    def _print_sigmoid(self, expr, exp=None):
        base = rf"\sigma\left({self._print(expr.args[0])}\right)"
        return base if exp is None else rf"\sigma^{{{exp}}}\left({self._print(expr.args[0])}\right)"

    def _print_softplus(self, expr, exp=None):
        name = r"\operatorname{softplus}"
        head = name if exp is None else rf"{name}^{{{exp}}}"
        return rf"{head}\left({self._print(expr.args[0])}\right)"

    def _print_Phi(self, expr, exp=None):
        return self._named(r"\Phi", expr, exp)

    def _print_phi(self, expr, exp=None):
        return self._named(r"\varphi", expr, exp)

    def _named(self, head, expr, exp):
        head = head if exp is None else rf"{head}^{{{exp}}}"
        return rf"{head}\left({self._print(expr.args[0])}\right)"

    def _as_ordered_terms(self, expr, order=None):
        terms = super()._as_ordered_terms(expr, order)
        first = [t for t in terms if t.is_Number and t.is_positive]
        return first + [t for t in terms if t not in first]

    def _print_Mul(self, expr):
        coeff, factors = expr.as_coeff_mul()
        sums = [f for f in factors if isinstance(f, (sp.Add, sp.Piecewise))]
        order = self._settings["named_order"]
        named = sorted((f for f in factors if f.is_Symbol and f.name in order), key=lambda f: order.index(f.name))
        plain = named + [f for f in sp.Mul(*factors).as_ordered_factors() if f not in sums and f not in named]
        if coeff not in (1, -1) or not (named or sums and plain) or any(
                f.is_Pow and f.exp.is_negative for f in factors):
            return super()._print_Mul(expr)
        out = []
        for f in plain + sums:
            tex = self._print(f)
            if isinstance(f, sp.Piecewise):
                wrap = f is not sums[-1]  # the cases' brace closes off the last factor by itself
            else:
                wrap = isinstance(f, sp.Add) or self._needs_mul_brackets(f, first=not out, last=False)
            if wrap:
                tex = rf"\left({tex}\right)"
            out.append(tex)
        return ("- " if coeff == -1 else "") + " ".join(out)

    def _print_Float(self, expr):
        text = f"{float(expr):.10g}"  # ten digits read better than seventeen; the kernels keep all
        if "e" in text:
            mantissa, exponent = text.split("e")
            return rf"{mantissa} \cdot 10^{{{int(exponent)}}}"
        return text


def decimal_rationals(expr):
    """Rationals with a denominator past 1000 -> Floats (printed to ten digits); other numbers stay exact."""
    if isinstance(expr, sp.MatrixExpr) or not isinstance(expr, sp.Basic):
        return expr
    return expr.replace(lambda e: e.is_Rational and e.q > 1000, lambda e: sp.Float(e, 17))


def latex(expr, **settings):
    """LaTeX of a derivation object or a scalar expression."""
    return DerivationLatexPrinter(settings).doprint(decimal_rationals(expr))


def latex_terms(expr, **settings):
    """The top-level terms of a sum, each as LaTeX with its sign ('+ ...' or '- ...' after the first).

    Lets a template break a long right-hand side across lines at its + and - signs.
    """
    expr = decimal_rationals(expr)
    if not isinstance(expr, sp.Add):
        return [latex(expr, **settings)]
    terms = DerivationLatexPrinter(settings)._as_ordered_terms(expr)  # the order the printer uses
    out = []
    for i, term in enumerate(terms):
        negative = term.could_extract_minus_sign()
        body = latex(-term if negative else term, **settings)
        out.append(("-" if negative else ("+" if i else "")) + " " + body)
    return [t.strip() for t in out]
