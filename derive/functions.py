"""Stable primitives the derivation keeps as named functions.

``1/(1+exp(-x))`` and ``log(1+exp(x))`` overflow when evaluated literally at large |x|, and their derivatives
differentiated literally overflow too (``exp(-x)/(1+exp(-x))**2`` is inf/inf at x = -1e3). Keeping them as named
SymPy functions whose derivatives are written in terms of themselves lets every derived expression stay in a form
the printers can emit stably (see ``codegen.numpy_printer``).
"""
import sympy as sp


class sigmoid(sp.Function):
    """The logistic function 1 / (1 + exp(-u)); sigmoid' = sigmoid (1 - sigmoid)."""

    nargs = 1

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    @classmethod
    def eval(cls, arg):
        if arg.is_zero:
            return sp.S.Half

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return 1 / (1 + sp.exp(-arg))

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_positive(self):
        return self.args[0].is_real


class softplus(sp.Function):
    """log(1 + exp(u)); softplus' = sigmoid."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return sp.log(1 + sp.exp(arg))

    def _eval_rewrite_as_log(self, arg, **kwargs):
        return sp.log(1 + sp.exp(arg))

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_positive(self):
        return self.args[0].is_real


STABLE_FUNCTIONS = (sigmoid, softplus)


def to_elementary(expr):
    """The same expression with the named primitives written out in exp and log (for solving and simplifying)."""
    return expr.replace(sigmoid, lambda u: 1 / (1 + sp.exp(-u))).replace(softplus, lambda u: sp.log(1 + sp.exp(u)))


def to_stable(expr):
    """Recognise the literal forms of the named primitives in ``expr`` and fold them back into the named functions.

    Catches what a user types: ``1/(1+exp(-u))``, ``exp(u)/(1+exp(u))``, ``log(1+exp(u))`` in any argument u.
    """
    u = sp.Wild("u")

    def fold(e):
        e = e.replace(sp.log(1 + sp.exp(u)), lambda u: softplus(u))
        e = e.replace(1 / (1 + sp.exp(u)), lambda u: sigmoid(-u))
        # exp(u)/(1+exp(u)) has become exp(u)*sigmoid(-u) by now: that is sigmoid(u)
        return e.replace(lambda n: isinstance(n, sp.Mul), _fold_exp_sigmoid)

    return fold(expr)


def _fold_exp_sigmoid(mul):
    """In a product, replace each pair of factors exp(u) * sigmoid(-u) by sigmoid(u)."""
    factors = list(mul.args)
    for i, a in enumerate(factors):
        if isinstance(a, sp.exp):
            for j, s in enumerate(factors):
                if isinstance(s, sigmoid) and sp.expand(s.args[0] + a.args[0]) == 0:
                    rest = [f for k, f in enumerate(factors) if k not in (i, j)]
                    return _fold_exp_sigmoid(sp.Mul(sigmoid(a.args[0]), *rest))
    return mul
