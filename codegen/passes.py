"""Passes on SymPy expressions that run before printing (the printers stay free of logic).

- ``float_constants``: every number that is not an integer becomes a Python float literal, so a float32 kernel
  stays float32 (NumPy 2 keeps Python floats "weak"; ``np.sqrt(2)`` is a float64 scalar and would promote).
- ``clamp_branches``: the branches of a Piecewise are all evaluated by ``np.where``; a branch that can overflow
  outside its own domain (elu's exp(x) at x = 1e3) gets its argument clamped to that domain, which changes nothing
  where the branch is selected.
"""
import sympy as sp


def float_constants(expr):
    """Numbers -> sp.Float, except integers and the exponents of powers (x**2 stays x**2, sqrt stays sqrt)."""
    if expr.is_Integer or isinstance(expr, sp.Float) or isinstance(expr, (sp.Symbol, sp.logic.boolalg.BooleanAtom)):
        return expr
    if expr.is_number and expr.is_real:
        return sp.Float(expr.evalf(17), 17)
    if isinstance(expr, sp.Pow) and expr.exp.is_Rational:
        return sp.Pow(float_constants(expr.base), expr.exp)
    if not expr.args:
        return expr
    return expr.func(*(float_constants(a) for a in expr.args))


def _can_overflow(expr):
    return expr.has(sp.exp, sp.cosh, sp.sinh) or any(
        p.exp.has(sp.Symbol) for p in expr.atoms(sp.Pow))


def clamp_branches(expr):
    """In Piecewise((a, v > c), (b, True)) with an exp-like branch, clamp v to the branch's side of c."""
    def clamp(*pairs):
        out = []
        for i, (value, cond) in enumerate(pairs):
            if i == 0 and isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan, sp.StrictLessThan, sp.LessThan)):
                var, edge = cond.lhs, cond.rhs
                if isinstance(var, sp.Symbol) and edge.is_number:
                    upward = isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan))
                    if _can_overflow(value):  # this branch is used only on its side of the edge
                        value = value.subs(var, (sp.Max if upward else sp.Min)(var, edge))
                    rest_value, rest_cond = pairs[1]
                    if len(pairs) == 2 and rest_cond is sp.true and _can_overflow(rest_value):
                        rest = rest_value.subs(var, (sp.Min if upward else sp.Max)(var, edge))
                        return sp.Piecewise((value, cond), (rest, True))
            out.append((value, cond))
        return sp.Piecewise(*out)

    return expr.replace(sp.Piecewise, clamp)


def prepare(expr):
    """All passes, in order: what the kernel printer is given."""
    return float_constants(clamp_branches(expr))
