"""Passes on SymPy expressions that run before printing (the printers stay free of logic).

    prepare(expr)        what the array printers are given: stable_forms, saturate, nan_through,
                         piecewise_arithmetic, clamp_branches, float_constants
    prepare_scalar(expr) what the scalar (Numba) printer is given (forward f only): stable_forms, nan_through,
                         float_constants (only the selected branch runs; Python's max would drop a NaN)

- ``stable_forms``: forms that lose accuracy where the math does not force it are rewritten into ones that do not,
  found on the expression tree (not on text), each rewrite checked equal by SymPy (``_checked``):

      c*exp(u) - c        -> c*expm1(u)               (elu, selu at E -> 0; softplus' 1 - exp(-h))
      log(1 + u)          -> log1p(u)
      c + c*erf(u)        -> c*erfc(-u) = 2c*ndtr(sqrt(2)*u)   (gelu's Phi far left; c - c*erf(u) likewise)
                             ndtr(v) = Phi(v) = erfc(-v/sqrt(2))/2 is SciPy's; in float32 it rounds no u/sqrt(2)
      c + c*tanh(u)       -> 2c*sigmoid(2u)           (gelu_tanh far left; c - c*tanh(u) -> 2c*sigmoid(-2u))
      c - c*tanh(u)**2    -> 4c*sigmoid(2u)*sigmoid(-2u)   (tanh' = sech^2 in both tails)
      c - c*sigmoid(u)    -> c*sigmoid(-u)
      c - c*v**2          -> c*(1 - v)*(1 + v)         (1 - h^2: 1 - h is exact for h in [1/2, 1])

- ``nan_through``: a Piecewise whose last branch (the one a NaN falls into: every comparison with NaN is false) is a
  constant gets a branch that depends on its argument moved last, so NaN in gives NaN out (relu: not 0).
- ``saturate``: an expression of one variable with finite limits at both ends, whose power of the variable would
  overflow while the factor it multiplies is 0 (gelu_tanh's f' at |E| > 1e19 in float32: inf * 0 = NaN), gets
  the variable clamped to where the limits are reached to beyond double precision.
- ``piecewise_arithmetic``: a two-branch Piecewise on a comparison with a number becomes arithmetic on values clamped
  to each branch's side (max, min, |u|, or comparisons written as 0/1 in the argument's dtype): np.where costs
  15-20 times a comparison where the branch taken is unpredictable. The same value bit for bit (signed zeros
  aside), NaN included.
- ``clamp_branches``: the branches of a Piecewise are all evaluated by ``np.where``; a branch that can overflow
  outside its own domain (elu's exp(x) at x = 1e3) gets its argument clamped to that domain, which changes nothing
  where the branch is selected.
- ``float_constants``: every number that is not an integer becomes a float literal, correctly rounded from 30 digits,
  so a float32 kernel stays float32 (NumPy 2 keeps Python floats "weak"; ``np.sqrt(2)`` is a float64 scalar and would
  promote).
"""
import mpmath
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from derive.functions import sigmoid, softplus, to_elementary


class ndtr(sp.Function):
    """The standard normal distribution function Phi(u) = erfc(-u/sqrt(2))/2, printed as SciPy's ``ndtr``."""

    nargs = 1

    def _eval_rewrite_as_erfc(self, arg, **kwargs):
        return sp.erfc(-arg / sp.sqrt(2)) / 2

    def _eval_is_real(self):
        return self.args[0].is_real


def _elementary(expr):
    """``expr`` in exp, log and erf only: what SymPy's simplify can prove identities in."""
    expr = expr.replace(ndtr, lambda u: sp.erfc(-u / sp.sqrt(2)) / 2)
    expr = expr.replace(expm1, lambda u: sp.exp(u) - 1).replace(log1p, lambda u: sp.log(1 + u))
    return to_elementary(expr).rewrite(sp.exp).replace(sp.erfc, lambda u: 1 - sp.erf(u))


PROOF_MAX_OPS = 60  # operations in new - old beyond which simplify is not tried: its time grows steeply with size
# (a user cell nesting tanh three deep spent 90 s in it); the 40-digit check below takes ms to a second


def _checked(new, old):
    """``new`` when SymPy proves it equal to ``old`` (or, where simplify gives up or the difference is too large to
    try, they agree to 30 digits at 40 at points across the reals); a rule that breaks this is a bug in the rule,
    not in the user's expression.

    A rule rewrites one node and keeps the arguments of its functions (exp(u) -> expm1(u)), so each such argument
    the two share is first replaced by a symbol: an identity for every real value of that symbol holds at u too,
    and the check stays small however large u is (a user's nested cell). Where that abstracted form does not agree
    (an argument the rule rewrote in part), the whole expressions are checked."""
    small_new, small_old = _abstract(new, old)
    if _agree(small_new, small_old) or ((small_new, small_old) != (new, old) and _agree(new, old)):
        return new
    raise AssertionError(f"stable_forms rewrote {_short(old)} as {_short(new)}, which differs")


def _short(expr, limit=300):
    text = str(expr)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _abstract(new, old):
    """``new`` and ``old`` with each argument of a function application in ``old`` that ``new`` holds too (and is
    not a symbol or a number) replaced by a fresh real symbol, outermost first."""
    for node in sp.preorder_traversal(old):
        if isinstance(node, sp.Function):
            for u in node.args:
                if not (u.is_Symbol or u.is_Number) and new.has(u) and old.has(u):
                    s = sp.Dummy(real=True)
                    return _abstract(new.xreplace({u: s}), old.xreplace({u: s}))
    return new, old


def _agree(new, old):
    """True when simplify proves new == old, or they agree to 30 digits at 40 at points across the reals (each
    variable its own value at each point: one value for all would let through a rewrite that swaps two of them);
    points where either side is not finite (a pole) are skipped, and at least four of the six must be left."""
    difference = _elementary(new) - _elementary(old)
    if sp.count_ops(difference) <= PROOF_MAX_OPS and sp.simplify(difference) == 0:
        return True
    free = sorted(difference.free_symbols, key=str)
    scale = _elementary(old)
    checked = 0
    for p in (-7.25, -1.5, -0.3, 0.2, 1.75, 6.5):
        at = {v: sp.Float(p + sp.Rational(37, 100) * i, 40) for i, v in enumerate(free)}
        gap, size = difference.xreplace(at).evalf(40), scale.xreplace(at).evalf(40)
        if not (gap.is_number and size.is_number and gap.is_finite and size.is_finite):
            continue
        if abs(gap) > sp.Float(10, 40) ** -30 * max(1, abs(size)):
            return False
        checked += 1
    return checked >= 4


def _terms(add):
    """The terms of ``add`` as (coefficient, factor) pairs: 3*exp(x) -> (3, exp(x)); 5 -> (5, 1)."""
    return [t.as_coeff_Mul() for t in add.args]


def _pair(add, kind, sign):
    """In an Add, a term c*F(u) with F of type ``kind`` and a number term sign*c: (c, F(u), the other terms)."""
    terms = _terms(add)
    numbers = [c for c, f in terms if f == 1]
    for i, (c, f) in enumerate(terms):
        for number in numbers:
            if kind(f) and number == sign * c:
                rest = list(add.args)
                rest.remove(c * f)
                rest.remove(number)
                return c, f, sp.Add(*rest)
    return None


def _is(cls):
    return lambda f: isinstance(f, cls)


def _rule_expm1(e):
    found = isinstance(e, sp.Add) and _pair(e, _is(sp.exp), -1)
    if found:  # c*exp(u) - c
        c, f, rest = found
        return rest + c * expm1(f.args[0])


def _rule_log1p(e):
    if isinstance(e, sp.log) and isinstance(e.args[0], sp.Add) and 1 in e.args[0].args:
        return log1p(e.args[0] - 1)


def _rule_erf(e):
    if not isinstance(e, sp.Add):
        return None
    for sign in (1, -1):
        found = _pair(e, _is(sp.erf), sign)
        if found:  # c + c*erf(u) = c*erfc(-u) = 2c*Phi(sqrt(2)*u);  c*erf(u) - c = -c*erfc(u) = -2c*Phi(-sqrt(2)*u)
            c, f, rest = found
            return rest + sign * 2 * c * ndtr(sign * sp.sqrt(2) * f.args[0])


def _rule_tanh(e):
    if not isinstance(e, sp.Add):
        return None
    for sign in (1, -1):
        found = _pair(e, _is(sp.tanh), sign)
        if found:  # c + c*tanh(u) = 2c*sigmoid(2u);  c*tanh(u) - c = -2c*sigmoid(-2u)
            c, f, rest = found
            u = f.args[0]
            return rest + (2 * c * sigmoid(2 * u) if sign == 1 else -2 * c * sigmoid(-2 * u))


def _tanh_squared(f):
    return isinstance(f, sp.Pow) and f.exp == 2 and isinstance(f.base, sp.tanh)


def _rule_sech2(e):
    found = isinstance(e, sp.Add) and _pair(e, _tanh_squared, -1)
    if found:  # c - c*tanh(u)^2 = 4c*sigmoid(2u)*sigmoid(-2u)
        c, f, rest = found
        u = f.base.args[0]
        return rest - 4 * c * sigmoid(2 * u) * sigmoid(-2 * u)


def _rule_one_minus_sigmoid(e):
    found = isinstance(e, sp.Add) and _pair(e, _is(sigmoid), -1)
    if found:  # c - c*sigmoid(u) = c*sigmoid(-u)
        c, f, rest = found
        return rest - c * sigmoid(-f.args[0])


def _square(f):
    return isinstance(f, sp.Pow) and f.exp == 2 and not _tanh_squared(f)


def _rule_difference_of_squares(e):
    found = isinstance(e, sp.Add) and _pair(e, _square, -1)
    if found:  # c - c*v^2 = c*(1 - v)*(1 + v)
        c, f, rest = found
        v = f.base
        return rest - c * sp.Mul(1 - v, 1 + v, evaluate=False)


RULES = (_rule_sech2, _rule_tanh, _rule_one_minus_sigmoid, _rule_erf, _rule_expm1, _rule_log1p,
         _rule_difference_of_squares)


def stable_forms(expr):
    """Apply ``RULES`` bottom-up (each node after its arguments), each rewrite checked by ``_checked``."""
    if not isinstance(expr, sp.Basic) or not expr.args or isinstance(expr, (sp.Symbol, sp.Number)):
        return expr
    args = tuple(stable_forms(a) for a in expr.args)
    node = expr.func(*args) if args != expr.args else expr
    if isinstance(node, sp.logic.boolalg.Boolean):
        return node
    for rule in RULES:
        new = rule(node)
        if new is not None and new != node:
            return stable_forms(_checked(new, node))  # the new node may hold another rule's pattern
    return node


def nan_through(expr):
    """Piecewise((a, c), (k, True)) with k constant -> Piecewise((k, ~c), (a, True)): NaN reaches a."""
    def reorder(*pairs):
        *head, (last, true) = pairs
        if last.free_symbols or not head:
            return sp.Piecewise(*pairs)
        for i, (value, cond) in enumerate(head):
            negated = sp.Not(cond)
            if value.free_symbols and not isinstance(negated, sp.Not):
                others = head[:i] + head[i + 1:]
                return sp.Piecewise(*others, (last, negated), (value, True))
        return sp.Piecewise(*pairs)

    return expr.replace(sp.Piecewise, reorder)


def float_constants(expr):
    """Numbers -> sp.Float, except integers and the exponents of powers (x**2 stays x**2, sqrt stays sqrt)."""
    if expr.is_Integer or isinstance(expr, sp.Float) or isinstance(expr, (sp.Symbol, sp.logic.boolalg.BooleanAtom)):
        return expr
    if expr.is_number and expr.is_real:
        return sp.Float(float(expr.evalf(30)), 17)  # correctly rounded to the nearest double
    if isinstance(expr, sp.Pow) and expr.exp.is_Rational:
        return sp.Pow(float_constants(expr.base), expr.exp)
    if not expr.args:
        return expr
    return expr.func(*(float_constants(a) for a in expr.args))


def _can_overflow(expr):
    return expr.has(sp.exp, expm1, sp.cosh, sp.sinh) or any(
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


def _limit_reached(fn, side):
    """The smallest X = 2**k (k = 3..10) beyond which ``fn`` (an mpmath function) is constant to 2**-60 relative, or
    below any double (2**-1100), on ``side`` (+1 or -1); None when it has no such finite limit."""
    with mpmath.workdps(40):
        try:
            far = fn(mpmath.mpf(side) * mpmath.mpf(2) ** 40)
            for k in range(3, 11):
                near = fn(mpmath.mpf(side) * 2 ** k)
                if abs(near) < mpmath.mpf(2) ** -1100 and abs(far) < mpmath.mpf(2) ** -1100:
                    return 2 ** k
                if abs(near - far) <= mpmath.mpf(2) ** -60 * abs(far):
                    return 2 ** k
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            return None
    return None


def _mpmath_function(expr, var):
    """``expr`` as a function of ``var`` evaluated by mpmath."""
    # mpmath's own expm1, log1p and erfc: SymPy would rewrite erfc(-u) as 2 - erfc(u), which cancels
    functions = {"expm1": mpmath.expm1, "log1p": mpmath.log1p, "ndtr": lambda u: mpmath.erfc(-u / mpmath.sqrt(2)) / 2}
    return sp.lambdify(var, to_elementary(expr), modules=[functions, "mpmath"])


def saturate(expr):
    """u in [-X, X] for an expression of one variable u that reaches finite limits at both ends by |u| = X but
    multiplies a power of u into a factor that vanishes there: gelu_tanh's f' is E * (1 + 0.134 E^2) * sigmoid(-u)
    * ..., and at |E| > 1e19 in float32 the power overflows while sigmoid(-u) is 0, so inf * 0 = NaN. Beyond X the
    value is the limit to beyond double precision, so clamping changes nothing else (NaN still passes through
    np.minimum and np.maximum).
    """
    free = expr.free_symbols
    if len(free) != 1 or expr.has(sp.Piecewise):
        return expr
    (var,) = free
    if not any(p.base == var and p.exp.is_Integer and p.exp >= 2 for p in expr.atoms(sp.Pow)):
        return expr
    ends = [_limit_reached(_mpmath_function(expr, var), side) for side in (1, -1)]
    if None in ends:
        return expr
    bound = sp.Integer(max(ends))
    return expr.xreplace({var: sp.Max(sp.Min(var, bound), -bound)})


class indicator(sp.Function):
    """indicator(u, e, k, 1) is 1 where ``u OP e`` holds and 0 elsewhere (NaN: 0), OP = ``indicator.OPS[k]``;
    indicator(u, e, k, 0) is 1 minus that (NaN: 1); in the dtype of the array u: what ``piecewise_arithmetic`` writes
    instead of a selection. Printed by the array printers only. (The comparison is kept in pieces: CSE would take a
    whole comparison out as a boolean temporary.)"""

    nargs = 4
    OPS = ("<", "<=", ">", ">=")

    @classmethod
    def of(cls, cond, holds):
        return cls(cond.lhs, cond.rhs, cls.OPS.index(cond.rel_op), int(holds))

    def _eval_is_real(self):
        return True


def _edge(cond):
    """(u, c, upward, the comparison written u first) for a comparison of the symbol u with the number c (upward:
    it holds above c); else None."""
    if not isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan, sp.StrictLessThan, sp.LessThan)):
        return None
    if cond.rhs.is_Symbol and cond.lhs.is_number:
        cond = cond.reversed
    if not (cond.lhs.is_Symbol and cond.rhs.is_number and cond.rhs.is_finite):
        return None
    return cond.lhs, cond.rhs, isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan)), cond


def _linear(expr, u):
    """a when ``expr`` is a*u for a number a (u itself: 1), else None."""
    a, rest = expr.as_coeff_Mul()
    return a if rest == u and a.is_finite else None


def _constant_term(expr):
    """True when ``expr`` is a sum with a term that is a number (log(1 + exp(u)) - log(2))."""
    return expr.is_Add and any(t.is_number for t in expr.args)


def _even_powers_positive(expr):
    """(-u - 1)**2 -> (u + 1)**2: the form SymPy leaves after u -> -u, for comparing the two branches' structure."""
    return expr.replace(lambda e: e.is_Pow and e.exp.is_even and e.base.could_extract_minus_sign(),
                        lambda e: (-e.base) ** e.exp)


TAME = 1e30  # |a value| an array printer may compute at the edge, in float32 (max 3.4e38) with room for the products


def _tame_at(expr, u, e):
    """True when every subexpression of ``expr`` that reads u is a finite real number of magnitude <= TAME at u = e:
    the branch not taken is evaluated there and multiplied by 0, and inf * 0 would be NaN (exp(u) at e = 90 in
    float32)."""
    for sub in sp.preorder_traversal(expr):
        if isinstance(sub, sp.Basic) and u in getattr(sub, "free_symbols", ()):
            value = sub.xreplace({u: e}).evalf(20)
            if not (value.is_number and value.is_real and value.is_finite and abs(value) <= TAME):
                return False
    return True


def piecewise_arithmetic(expr):
    """A two-branch Piecewise((p, c), (q, True)), c comparing a symbol u with a number e, as arithmetic on values
    clamped to each branch's side (np.where costs ~3.5 ns an element where the branch taken is unpredictable, 15 to
    20 times a comparison or a product: measured on 1e5 to 3e6 elements, float32 and float64):

        p a number, q(e) = p:       q(max(u, e)) (or min)       relu = max(u, 0); elu'(h) = min(h, 0) + 1
        q(u) = p(-u), e = 0:        p(|u|) (or q)               softsign'(h) = (1 - |h|)**2
        p = a u, q = b u, e = 0:    max(a u, b u) (or min)      leaky_relu = max(u, u/100)
        p(0) = q(0) = 0, e = 0:     p(max(u, 0)) + q(min(u, 0))  elu = max(u, 0) + expm1(min(u, 0))
        p(e), q(e) tame:            p(max(u, e)) [c] + q(min(u, e)) [not c]   relu'(h) = [not h <= 0]

    (the sum only where neither branch has a constant term; the mirror only where u -> -u turns one branch into the
    other as written, even powers aside; the indicators only where every part of both branches stays finite and
    <= TAME at the edge). The same value at every u (signed zeros aside: relu(-0.0) is -0.0 here, +0.0 from
    np.where and from the compiled target), the edge included, and NaN gives what the Piecewise's last branch gives there
    (nan_through puts the branch that reads u last): q(NaN) when q reads u (NaN), the number q otherwise (then
    [not c] is 1 and p [c] is 0: p is a number, asked below). Each branch is evaluated only on its own side of e, so
    one that would overflow beyond the edge cannot (clamp_branches' job, here for free), and the other term is a
    finite value times 0. The sums assume what IEEE arithmetic gives at exactly 0: each elementary function of 0
    that is 0 or 1 (expm1, log1p, sin, tanh, exp, u itself) is exactly that, so the term of the branch not taken
    adds an exact 0. Otherwise the Piecewise is left as it is (printed as np.where)."""
    def rewrite(*pairs):
        if len(pairs) != 2 or pairs[1][1] is not sp.true:
            return sp.Piecewise(*pairs)
        (p, cond), (q, _) = pairs
        edge = _edge(cond)
        if edge is None:
            return sp.Piecewise(*pairs)
        u, e, upward, cond = edge
        if not (p.free_symbols <= {u} and q.free_symbols <= {u}):
            return sp.Piecewise(*pairs)
        p_e, q_e = p.subs(u, e), q.subs(u, e)
        if not all(v.is_number and v.is_finite for v in (p_e, q_e)):
            return sp.Piecewise(*pairs)
        mine, theirs = (sp.Max, sp.Min) if upward else (sp.Min, sp.Max)  # p's side of e, q's side
        p_side, q_side = p.subs(u, mine(u, e)), q.subs(u, theirs(u, e))
        if p.is_number and sp.simplify(q_e - p) == 0 and (e == 0 or q == u):
            return q_side
        if e == 0 and u in q.free_symbols:
            if _even_powers_positive(p.xreplace({u: -u})) == _even_powers_positive(q):  # mirror images: p(|u|)
                return (p if upward else q).subs(u, sp.Abs(u))  # softsign'(h) = (1 - |h|)**2
            a, b = _linear(p, u), _linear(q, u)
            if a is not None and b is not None:  # above 0 the larger slope gives the larger value
                return (sp.Max if bool(a >= b) == upward else sp.Min)(a * u, b * u)
            if p_e == 0 and q_e == 0 and not (_constant_term(p) or _constant_term(q)):
                return p_side + q_side  # (a constant term would be added on one side and taken off on the other)
        if (p.is_number or u in q.free_symbols) and _tame_at(p, u, e) and _tame_at(q, u, e):
            return p_side * indicator.of(cond, True) + q_side * indicator.of(cond, False)
        return sp.Piecewise(*pairs)

    return expr.replace(sp.Piecewise, rewrite)


def prepare(expr):
    """All passes, in order: what the kernel printer is given."""
    return float_constants(clamp_branches(piecewise_arithmetic(nan_through(saturate(stable_forms(expr))))))


def prepare_scalar(expr):
    """The passes for the scalar printer: only the selected branch of a conditional runs, so no branch is clamped;
    ``saturate``'s clamp stays (gelu's and gelu_tanh's f' would be inf * 0 = NaN at infinite E)."""
    return float_constants(nan_through(saturate(stable_forms(expr))))


# --- one pass for f and f' (the forward step that keeps f'(E_t)) ----------------------------------------------------

def _saturation_clamp(expr):
    """(the clamp, its variable, X) when ``expr`` holds saturate's Max(Min(u, X), -X), else None."""
    for m in expr.atoms(sp.Max):
        low = [a for a in m.args if a.is_number]
        (inner,) = [a for a in m.args if isinstance(a, sp.Min)] or [None]
        if inner is not None and len(m.args) == 2 and low:
            var = [a for a in inner.args if isinstance(a, sp.Symbol)]
            high = [a for a in inner.args if a.is_number]
            if len(inner.args) == 2 and var and high and high[0] == -low[0]:
                return m, var[0], high[0]
    return None


def _function_terms(expr, var):
    """The outermost function applications in ``expr`` that depend on ``var`` (ndtr(E), sigmoid(E**3 + E))."""
    if isinstance(expr, sp.Function) and not isinstance(expr, (sp.Max, sp.Min)) and var in expr.free_symbols:
        return [expr]
    return [t for a in expr.args for t in _function_terms(a, var)]


def share_saturated(f, df):
    """``f`` for the pass that also computes ``df`` (both prepared): where saturate clamped df's variable to
    [-X, X], each function term of f that reaches its limits at both ends by |u| = X (to beyond double precision,
    the test saturate itself uses) takes the clamped variable too; it is then the very term df computes, and one
    pass computes it once (gelu's ndtr(E), gelu_tanh's sigmoid of the cubic). No value changes: beyond X the term
    is its limit either way."""
    found = _saturation_clamp(df)
    if found is None:
        return f
    clamp, var, bound = found
    shared = {}
    for term in _function_terms(f, var):
        ends = [_limit_reached(_mpmath_function(term, var), side) for side in (1, -1)]
        if None not in ends and max(ends) <= bound:
            shared[term] = term.xreplace({var: clamp})
    return f.xreplace(shared)


def _pair_product(mul):
    """In a product, sigmoid(u)*sigmoid(-u) -> z/(1 + z)**2 with z = exp(-|u|) (exact; the quotient of values in
    [0, 1] and [1, 2], with no cancellation at either end), once per pair of factors."""
    factors = list(mul.args)
    for a in factors:
        if isinstance(a, sigmoid):
            partner = sigmoid(-a.args[0])
            if partner in factors:
                factors.remove(a)
                factors.remove(partner)
                z = sp.exp(-sp.Abs(a.args[0]))
                return sp.Mul(*factors, z, sp.Pow(1 + z, -2))
    return None


def _sigmoid_of_softplus(exprs):
    """sigmoid(u) -> -expm1(-softplus(u)) where softplus(u) is computed in the same pass anyway (mish): exp(-softplus(u))
    = 1/(1 + exp(u)) = sigmoid(-u), so three passes instead of a sigmoid's six. As accurate: an error of d (relative)
    in softplus(u) = s moves the result by s exp(-s) d, relative to sigmoid(u) at most about d (u -> -inf: s ~
    sigmoid(u)); expm1 loses nothing near 0."""
    spent = {a.args[0] for e in exprs for a in e.atoms(softplus)}
    return [e.replace(sigmoid, lambda u: -expm1(-softplus(u)) if u in spent else sigmoid(u)) for e in exprs]


def shared_sigmoids(exprs):
    """Expressions computed in one pass with their sigmoids in terms of z = exp(-|u|), when two of them share a |u|:
    sigmoid(u)*sigmoid(-u) -> z/(1 + z)**2, then sigmoid(u) -> max(z, [u >= 0])/(1 + z) (1/(1 + exp(-u)) for
    u >= 0, exp(u)/(1 + exp(u)) below: the support module's sigmoid, written out), so z and 1 + z are computed once.
    A sigmoid whose |u| nothing else uses stays one call; one of an argument whose softplus the pass computes is
    written from it (``_sigmoid_of_softplus``)."""
    exprs = _sigmoid_of_softplus(list(exprs))
    for i, e in enumerate(exprs):
        while True:
            muls = [m for m in sp.preorder_traversal(e) if isinstance(m, sp.Mul) and _pair_product(m) is not None]
            if not muls:
                break
            e = e.xreplace({muls[0]: _pair_product(muls[0])})
        exprs[i] = e
    uses = {}
    for e in exprs:
        for a in e.atoms(sigmoid):
            uses.setdefault(sp.Abs(a.args[0]), set()).add(a)
        for a in e.atoms(sp.exp):
            if isinstance(-a.args[0], sp.Abs):
                uses.setdefault(-a.args[0], set()).add(a)
    expand = {}
    for used in uses.values():
        if len(used) > 1:
            for a in used:
                if isinstance(a, sigmoid):
                    z = sp.exp(-sp.Abs(a.args[0]))
                    expand[a] = sp.Max(z, sp.Heaviside(a.args[0], 1)) * sp.Pow(1 + z, -1)
    return [e.xreplace(expand) for e in exprs]
