r"""Presentation passes for the LaTeX: a derived SymPy expression -> the form a textbook prints, proved equal first.

``textbook(expr, named)`` runs the passes in order and keeps each one's result only when ``proved_equal`` shows,
with SymPy, that it equals the derived expression (named constants and functions written back out); otherwise the
derived form is printed as it is. Nothing here is typed text: every form is an expression SymPy has checked.

- ``name_parameters``: numbers that are products of an activation's long constants (SELU's lambda and alpha) ->
  those symbols, so selu'(x) reads lambda*alpha*e^x, not 1.758099341 e^x;
- ``fold_sign``: sign(u) -> |u|/u, then cancel (softsign' = 1/(1 + |x|)^2, not two terms with sign(x));
- ``fold_abs_branches``: Piecewise((p(v), v >= 0), (p(-v), True)) -> p(|v|) (softsign' in h = (1 - |h|)^2);
- ``name_normal``: erf(u) -> 2 Phi(sqrt(2) u) - 1 and, beside Phi, exp(-u^2/2) -> sqrt(2 pi) phi(u), with Phi and
  phi the standard normal distribution function and density (gelu = x Phi(x), gelu' = Phi(x) + x phi(x));
- ``common_coefficients`` (for constants only: it would merge the terms a long sum breaks at): 1/2 + erf(1)/2 ->
  (1 + erf(1))/2;
- ``positive_sums``: -a (b - 1) -> a (1 - b) (silu' = sigma(x)(1 + x(1 - sigma(x))), not ... - x(sigma(x) - 1)),
  and (b - 1)^2 -> (1 - b)^2.

``closed_form_sup`` finds sup |f'| exactly where the critical points of f' are roots of polynomials (gelu's, at
x = sqrt(2)); the derivation itself gives only a 15-digit value there.
"""
import itertools

import sympy as sp

from derive.functions import to_elementary


class Phi(sp.Function):
    """The standard normal distribution function, (1 + erf(u / sqrt(2))) / 2; Phi' = phi."""

    nargs = 1

    def fdiff(self, argindex=1):
        return phi(self.args[0])

    def _eval_rewrite_as_erf(self, arg, **kwargs):
        return (1 + sp.erf(arg / sp.sqrt(2))) / 2


class phi(sp.Function):
    """The standard normal density, exp(-u^2 / 2) / sqrt(2 pi); phi' = -u phi."""

    nargs = 1

    def fdiff(self, argindex=1):
        return -self.args[0] * phi(self.args[0])

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return sp.exp(-arg**2 / 2) / sp.sqrt(2 * sp.pi)


def definitions(u):
    """Phi(u) and phi(u) as textbooks write them, (1 + erf(u/sqrt(2)))/2 and exp(-u^2/2)/sqrt(2 pi), held
    unevaluated (SymPy would write sqrt(2) u / 2 and sqrt(2) / (2 sqrt(pi))); each proved equal to the function."""
    root = sp.Pow(sp.Mul(2, sp.pi, evaluate=False), sp.S.Half, evaluate=False)
    half_root = sp.Pow(sp.sqrt(2), -1, evaluate=False)
    forms = {Phi: sp.Mul(sp.Rational(1, 2), 1 + sp.erf(sp.Mul(u, half_root, evaluate=False), evaluate=False),
                         evaluate=False),
             phi: sp.Mul(sp.exp(-u**2 / 2), sp.Pow(root, -1, evaluate=False), evaluate=False)}
    for fn, form in forms.items():
        if not proved_equal(form, fn(u)):
            raise AssertionError(f"the printed definition of {fn.__name__} is wrong: {form}")
    return forms


def unnamed(expr, named=None):
    """``expr`` with the named constants' values and Phi, phi, sigmoid, softplus written out."""
    expr = expr.subs(named or {})
    expr = expr.replace(Phi, lambda u: Phi(u).rewrite(sp.erf)).replace(phi, lambda u: phi(u).rewrite(sp.exp))
    return to_elementary(expr)


def proved_equal(a, b, named=None):
    """True when SymPy proves a == b for every real value of their variable (branch by branch for Piecewise);
    False when it cannot (a form it cannot prove is not printed)."""
    try:
        return _proved_equal(a, b, named)
    except (NotImplementedError, TypeError, ValueError):
        return False


def _proved_equal(a, b, named):
    diff = sp.piecewise_fold((unnamed(a, named) - unnamed(b, named)).rewrite(sp.Piecewise))
    pieces = diff.args if isinstance(diff, sp.Piecewise) else ((diff, sp.true),)
    rest = sp.S.Reals  # the values no earlier branch has taken
    for expr, cond in pieces:
        variables = cond.free_symbols
        if len(variables) > 1:
            return False
        domain = sp.Intersection(rest, cond.as_set()) if variables else (rest if cond is sp.true else sp.S.EmptySet)
        rest = sp.Complement(rest, domain)
        if domain.is_empty:
            continue
        if isinstance(domain, sp.FiniteSet):  # a branch boundary: compare there
            (v,) = variables
            if any(sp.simplify(expr.subs(v, p)) != 0 for p in domain):
                return False
        elif sp.expand(expr) != 0 and sp.simplify(expr) != 0:
            return False
    return True


def long_constants(params):
    """The parameters worth a name: values that print only as truncated decimals (SELU's 32-digit constants)."""
    return {p: v for p, v in params.items() if isinstance(v, sp.Rational) and v.q > 1000}


def name_parameters(expr, named):
    """Numbers equal (up to sign) to a product of named constants -> that product of their symbols."""
    if not named:
        return expr
    products = {}
    for k in range(len(named), 0, -1):
        for subset in itertools.combinations(sorted(named, key=str), k):
            products.setdefault(sp.Mul(*(named[p] for p in subset)), sp.Mul(*subset))
    swap = {}
    for n in expr.atoms(sp.Rational):
        if n in products:
            swap[n] = products[n]
        elif -n in products:
            swap[n] = -products[-n]
    return expr.xreplace(swap)


def fold_sign(expr):
    """sign(u) -> |u|/u and cancel, where that is shorter."""
    if not expr.has(sp.sign):
        return expr
    folded = sp.factor(sp.together(expr.replace(sp.sign, lambda u: sp.Abs(u) / u)))
    return folded if sp.count_ops(folded) < sp.count_ops(expr) else expr


def fold_abs_branches(expr):
    """Piecewise((p(v), v >= 0 or v > 0), (p(-v), True)) -> p(|v|); and the same written left side first,
    Piecewise((p(-v), v <= 0 or v < 0), (p(v), True)), as the kink rule writes it."""
    if not (isinstance(expr, sp.Piecewise) and len(expr.args) == 2 and expr.args[1][1] is sp.true):
        return expr
    (first, cond), (second, _) = expr.args
    if isinstance(cond, (sp.LessThan, sp.StrictLessThan)) and cond.rhs == 0 and cond.lhs.is_Symbol:
        first, second = second, first  # the right side's piece is p(v)
    elif not (isinstance(cond, (sp.GreaterThan, sp.StrictGreaterThan)) and cond.rhs == 0 and cond.lhs.is_Symbol):
        return expr
    v = cond.lhs
    if sp.expand(first.subs(v, -v) - second) != 0:
        return expr
    return sp.factor(first).subs(v, sp.Abs(v))


def name_normal(expr):
    """erf(u) -> 2 Phi(sqrt(2) u) - 1, and then exp(-u^2/2) -> sqrt(2 pi) phi(u); expanded when that is shorter."""
    if not expr.has(sp.erf):
        return expr
    named = expr.replace(sp.erf, lambda u: 2 * Phi(sp.sqrt(2) * u) - 1)

    def density(arg):
        square = sp.factor(-2 * arg)
        if square.is_Pow and square.exp == 2:
            return sp.sqrt(2 * sp.pi) * phi(square.base)
        return sp.exp(arg)

    named = named.replace(sp.exp, density)
    return min((named, sp.expand(named), sp.factor(named)), key=sp.count_ops)


def positive_sums(expr):
    """A sum with a negative constant takes the minus sign of its product, or of its even power:
    -x (s - 1) -> x (1 - s), (|h| - 1)^2 -> (1 - |h|)^2."""
    def flip(mul):
        coeff, factors = mul.as_coeff_mul()
        sums = [f for f in factors if f.is_Add and f.as_coeff_Add()[0].is_negative]
        if coeff.is_negative and len(sums) == 1:
            rest = [f for f in factors if f is not sums[0]]
            return sp.Mul(-coeff, -sums[0], *rest)
        return mul

    def even(power):
        base, exp = power.as_base_exp()
        if exp.is_Integer and exp.is_even and base.is_Add and base.as_coeff_Add()[0].is_negative:
            return sp.Pow(-base, exp)
        return power

    expr = expr.replace(lambda e: isinstance(e, sp.Pow), even)
    return expr.replace(lambda e: isinstance(e, sp.Mul), flip)


def common_coefficients(expr):
    """a/2 + b/2 + c -> (a + b)/2 + c: the terms of a sum that share a rational coefficient other than 1 grouped."""
    if not isinstance(expr, sp.Add):
        return expr
    groups = {}
    for term in expr.args:
        coeff, rest = term.as_coeff_Mul()
        groups.setdefault(coeff, []).append(rest)
    if all(len(rests) < 2 or coeff in (1, -1) for coeff, rests in groups.items()):
        return expr
    out = []
    for coeff, rests in groups.items():
        if len(rests) < 2 or coeff in (1, -1):
            out += [coeff * r for r in rests]
        else:
            out.append(sp.Mul(coeff, sp.Add(*rests), evaluate=False))
    return sp.Add(*out, evaluate=False)


PASSES = (fold_sign, fold_abs_branches, name_normal, positive_sums)


def textbook(expr, named=None, candidates=()):
    """The textbook form of ``expr``: each of ``candidates`` (e.g. the catalogue's own f with its named constants)
    and then each pass, kept only when proved equal to ``expr``. ``named`` maps constant symbols to their values."""
    named = named or {}
    form = name_parameters(expr, named)
    if not proved_equal(form, expr, named):
        form = expr
    for cand in candidates:
        if proved_equal(cand, expr, named):
            form = cand
            break
    for rewrite in PASSES:
        cand = rewrite(form)
        if cand != form and proved_equal(cand, expr, named):
            form = cand
    return form


def closed_form_sup(df, var, numeric, digits=12):
    """sup over real ``var`` of |df| in closed form, with the point where it is attained: (value, point), or None.

    Proof: df is continuous on the reals (no branches), so sup |df| is |df| at a critical point or its limit at
    +-oo. df'' = 0 is solved factor by factor: exp factors never vanish, polynomial factors have exact roots, and any
    other factor means no closed form here (None). The result must agree with ``numeric`` (the derivation's
    15-digit value) to ``digits`` digits, else None.
    """
    if df.has(sp.Piecewise, sp.Abs, sp.sign, sp.Heaviside) or var not in df.free_symbols:
        return None
    try:
        return _closed_form_sup(df, var, numeric, digits)
    except (NotImplementedError, TypeError, ValueError):
        return None  # SymPy could not finish the proof: the numeric value is printed with '≈'


def _closed_form_sup(df, var, numeric, digits):
    elementary = to_elementary(df)
    second = sp.factor(sp.diff(elementary, var))
    roots = set()
    for factor in sp.Mul.make_args(second):
        base, exp = factor.as_base_exp()
        if var not in factor.free_symbols or isinstance(factor, sp.exp) or exp.is_negative:
            continue  # constants, denominators and exponentials do not vanish
        if not base.is_polynomial(var) or not exp.is_positive:
            return None
        roots |= set(sp.real_roots(sp.Poly(base, var)))
    points = [(sp.Abs(sp.simplify(elementary.subs(var, r))), r) for r in sorted(roots, key=lambda r: float(r))]
    points += [(sp.Abs(sp.limit(elementary, var, end)), end) for end in (sp.oo, -sp.oo)]
    value, point = max(points, key=lambda p: sp.N(p[0], 30))
    if not value.is_finite or abs(float(sp.N(value, 30)) - float(numeric)) > 10.0**-digits * max(1.0, abs(numeric)):
        return None
    value = sp.simplify(value)
    grouped = common_coefficients(value)
    return (grouped if proved_equal(grouped, value) else value), point
