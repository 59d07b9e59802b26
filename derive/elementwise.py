"""Activation -> its scalar derivation: f, f', f' in terms of the output h = f(x) where one exists, and sup |f'|.

Everything here is about the scalar function; ``derive.recurrence`` lifts it to the RNN's matrices.

The output form is found, never assumed: each branch of f is inverted with SymPy's ``solve``, f' is rewritten at the
inverse, and the result is accepted only if SymPy proves g(f(x)) - f'(x) = 0 on the branch AND the identity holds at
40 digits on a grid of points (branch boundaries and |x| up to 1e3 included). A branch where f is not monotone (SiLU,
GELU, sin) is not inverted at all: no function of h can give f' there.
"""
from dataclasses import dataclass

import mpmath
import sympy as sp

from derive.errors import DerivationError
from derive.functions import to_elementary, to_stable
from derive.parse import X as x

H = sp.Symbol("h", real=True)  # the output h = f(x)

GRID = tuple(sp.Rational(k, 4) for k in range(-80, 81)) + tuple(
    s * sp.Integer(v) for v in (30, 50, 100, 1000) for s in (1, -1))
_DIGITS = 40


@dataclass(frozen=True)
class Elementwise:
    """The scalar derivation of one activation. ``df_h`` is None when f' cannot be written in h alone.

    ``gamma`` is sup |f'(x)| over the reals (sp.oo when unbounded, None when not found); ``gamma_exact`` says
    whether SymPy found it in closed form (else it is a 15-digit numeric value).
    """

    f: sp.Expr
    df: sp.Expr
    df_h: sp.Expr = None
    gamma: sp.Expr = None
    gamma_exact: bool = False
    kinks: tuple = ()  # the x where f' jumps (relu: 0); finite differences across them are meaningless

    @property
    def uses_output(self):
        return self.df_h is not None


def derive_elementwise(f):
    """f (SymPy expression in x, parameters substituted) -> Elementwise. Raises DerivationError when it cannot."""
    f = sp.piecewise_fold(to_stable(sp.sympify(f)))
    _check_activation(f)
    df = kink_convention(sp.diff(f, x))
    _check_derivative(f, df)
    df_h = output_form(f, df)
    gamma, exact = sup_abs(df)
    return Elementwise(f=f, df=df, df_h=df_h, gamma=gamma, gamma_exact=exact, kinks=kinks(df))


def kinks(df):
    """The finite branch boundaries of f' where its one-sided values differ, sorted."""
    out = set()
    pieces = [(e, d) for e, d in _branches(df) if not d.is_empty]
    edges = {p for _, d in pieces for p in d.boundary if p.is_finite} if len(pieces) > 1 else set()
    for c in edges:
        sides = {sp.N(e.subs(x, c), 30) for e, d in pieces if sp.Union(d, d.boundary).contains(c) is sp.true}
        if len(sides) > 1:
            out.add(c)
    return tuple(sorted(out))


def _check_activation(f):
    extra = f.free_symbols - {x}
    if extra:
        raise DerivationError(f"activation {f} has symbols other than x: {', '.join(sorted(map(str, extra)))}")
    if x not in f.free_symbols:
        raise DerivationError(f"activation {f} is constant: it does not depend on x, so every gradient is zero")
    if f.has(sp.I, sp.zoo, sp.nan):
        raise DerivationError(f"activation {f} is not real-valued")
    undefined = sorted(str(a.func) for a in f.atoms(sp.core.function.AppliedUndef))
    if undefined:
        raise DerivationError(f"activation {f} uses functions SymPy cannot differentiate: {', '.join(undefined)}")
    _check_finite(f, f"activation {f} is not real and finite on the whole real line")


def _check_finite(expr, what):
    """Refuse ``expr`` when it is undefined, infinite or complex at a grid point (0 and |x| up to 1e3 included)."""
    fm = _mp(expr, x)
    with mpmath.workdps(30):
        for p in GRID + (sp.Integer(0),):
            try:
                value = mpmath.mpmathify(fm(mpmath.mpf(p)))
                ok = isinstance(value, mpmath.mpf) and mpmath.isfinite(value)
            except (ZeroDivisionError, ValueError, OverflowError):
                ok = False
            if not ok:
                raise DerivationError(f"{what}: at x = {p} it is undefined, infinite or complex")


def kink_convention(df):
    """f' with its value at every kink set to the left limit f'(k-), whatever value the raw derivative has there.

    The rule: split the real line at the finite boundaries of f''s pieces (Heaviside, sign, Abs, Max, Min and
    Piecewise all become pieces), take on each open interval the piece that holds there, and close each interval on
    the right, so that at a boundary k the piece of the interval left of k is used: its value at k is the one-sided
    limit f'(k-) (each piece is an elementary expression, continuous on its closed interval). The left limit lies
    in the subgradient interval [min(f'(k-), f'(k+)), max(...)] and gives PyTorch's values for the catalogue
    (relu'(0) = 0, leaky_relu'(0) = 0.01, selu'(0) = scale*alpha), however the user wrote f: ``max(x, 0.1*x)``,
    a Piecewise in either order, ``abs`` and ``min`` alike. Boundaries where the two sides agree are merged away.
    Each piece is then simplified (``_tidy``) on its own.
    """
    raw = sp.piecewise_fold(
        df.replace(sp.Heaviside, lambda u, *rest: sp.Piecewise((1, u > 0), (0, u < 0), (sp.S.Half, True))))
    pieces = [(e, d) for e, d in _branches(raw) if not d.is_empty]
    if len(pieces) == 1:
        return _tidy(pieces[0][0])
    edges = sorted({p for _, d in pieces for p in d.boundary if p.is_finite and p.is_real})
    if not edges:
        return _tidy(sp.piecewise_fold(raw))
    probes = [edges[0] - 1] + [(a + b) / 2 for a, b in zip(edges, edges[1:])] + [edges[-1] + 1]
    exprs = [next(e for e, d in pieces if d.contains(p) is sp.true) for p in probes]
    merged = []  # (expression, right end of its interval), adjacent equal expressions joined
    for expr, right in zip(exprs, edges + [None]):
        if merged and expr == merged[-1][0]:
            merged[-1] = (expr, right)
        else:
            merged.append((expr, right))
    if len(merged) == 1:
        return _tidy(merged[0][0])
    return sp.Piecewise(*[(_tidy(e), x <= right) for e, right in merged[:-1]], (_tidy(merged[-1][0]), True))


def _tidy(expr):
    """SymPy's simplification of ``expr``, taken only when it is shorter and brings in no new function.

    New functions are refused because they can be numerically worse: simplify turns tanh' = 1 - tanh^2 into
    1/cosh^2, which overflows at |x| > 710.
    """
    def kinds(e):
        return {type(a) for a in e.atoms(sp.Function)}

    simpler = sp.simplify(expr)
    if sp.count_ops(simpler) < sp.count_ops(expr) and kinds(simpler) <= kinds(expr) and not simpler.has(sp.I):
        return simpler
    return expr


def _check_derivative(f, df):
    if df.has(sp.Derivative, sp.Subs) or any(isinstance(a, sp.core.function.AppliedUndef)
                                             for a in df.atoms(sp.Function)):
        raise DerivationError(f"the derivative of {f} has no closed elementary form: SymPy leaves {df}")
    if df.has(sp.DiracDelta):
        raise DerivationError(f"the derivative of {f} has a Dirac delta: {f} is discontinuous")
    if df.is_zero:
        raise DerivationError(f"activation {f} has derivative 0 everywhere: every gradient would be zero")
    _check_finite(df, f"activation {f} is not differentiable everywhere: its derivative {df} is not finite")


def _branches(f):
    """[(expr, set of x)] covering the reals, one per Piecewise branch (a single branch when f is smooth)."""
    if f.has(sp.Abs, sp.Max, sp.Min, sp.sign):
        f = sp.piecewise_fold(f.rewrite(sp.Piecewise))
    if not isinstance(f, sp.Piecewise):
        return [(f, sp.S.Reals)]
    out, rest = [], sp.S.Reals
    for expr, cond in f.args:
        domain = rest if cond is sp.true else sp.Intersection(rest, cond.as_set())
        out.append((expr, domain))
        rest = sp.Complement(rest, domain)
    return out


def _mp(expr, var):
    """A 40-digit mpmath function of ``var`` (the named primitives written out first)."""
    return sp.lambdify(var, to_elementary(expr), modules=["mpmath"])


def _points(domain):
    pts = [p for p in GRID if domain.contains(p) is sp.true]
    if isinstance(domain, sp.Interval):
        pts += [e for e in (domain.left, domain.right) if e.is_finite and domain.contains(e) is sp.true]
    return pts


def _agree(a, b):
    return abs(a - b) <= mpmath.mpf(10) ** (-25) * max(1, abs(b))


def _monotone(df_branch, domain):
    """f' keeps one sign over the branch's grid points (f is injective there, so f' may be a function of h)."""
    d = _mp(df_branch, x)
    with mpmath.workdps(_DIGITS):
        signs = {mpmath.sign(d(mpmath.mpf(p))) for p in _points(domain)}
    return signs <= {1, 0} or signs <= {-1, 0}


def _invert_branch(fi, dfi, domain):
    """g(h) with g(fi(x)) = dfi(x) for x in ``domain``, or None."""
    if x not in dfi.free_symbols:
        return dfi
    if not _monotone(dfi, domain):
        return None
    for inv in _inverses(fi, domain):
        at_inverse = to_elementary(dfi).subs(x, inv)
        # tanh(atanh(h)) folds by itself; what solve returns for other branches needs exp form to simplify.
        for candidate in (sp.simplify(at_inverse), sp.simplify(at_inverse.rewrite(sp.exp))):
            candidate = to_stable(min(candidate, sp.factor(candidate), key=sp.count_ops))
            if not candidate.has(x, sp.I) and _verified(candidate, fi, dfi, domain):
                return candidate
    return None


def _inverses(fi, domain):
    """Candidate inverses x = g(h) of h = fi(x) on ``domain``: solveset's finite answers, else solve's."""
    equation = sp.Eq(H, to_elementary(fi))
    try:
        found = sp.solveset(equation, x, domain)
        if isinstance(found, sp.Intersection):
            found = next((a for a in found.args if isinstance(a, sp.FiniteSet)), None)
        if isinstance(found, sp.FiniteSet):
            return list(found)
        return sp.solve(equation, x)
    except (NotImplementedError, ValueError, TypeError):
        return []


def _verified(g, fi, dfi, domain):
    """g(fi(x)) == dfi(x): SymPy proves it symbolically, and it holds at 40 digits on the grid."""
    if sp.simplify(to_elementary(g.subs(H, fi) - dfi)) != 0:
        return False
    gm, fm, dm = _mp(g, H), _mp(fi, x), _mp(dfi, x)
    with mpmath.workdps(_DIGITS):
        try:
            return all(_agree(gm(fm(mpmath.mpf(p))), dm(mpmath.mpf(p))) for p in _points(domain))
        except (ZeroDivisionError, ValueError, TypeError):
            return False


def output_form(f, df):
    """f' written in h = f(x) alone, as a SymPy expression in ``H``; None when no such form exists or none is found.

    Piecewise f: each branch is inverted on its own domain, and the branches are told apart in h by their images,
    which must not overlap (relu: x > 0 <=> h > 0); at the h of a kink the form gives f''s own value there (the
    left limit, see ``kink_convention``).
    """
    pieces = []
    for fi, domain in _branches(f):
        if domain.is_empty:
            continue
        dfi = kink_convention(sp.diff(fi, x))
        g = _invert_branch(fi, dfi, domain)
        if g is None:
            return None
        image = sp.calculus.util.function_range(to_elementary(fi), x, domain)
        pieces.append((g, image))
    for i, (_, a) in enumerate(pieces):
        for _, b in pieces[i + 1:]:
            if not sp.Intersection(a, b).is_empty:
                return None
    if len(pieces) == 1:
        return pieces[0][0] if _form_holds(pieces[0][0], f, df) else None
    # Where two images meet (relu: {0} and (0, oo)), one branch must own the shared h; which one is not known from
    # the images alone (f increasing: the lower image is the left limit's), so both are tried against f' itself.
    ascending = sorted(pieces, key=lambda p: (float(p[1].inf), float(p[1].sup)))
    lower_owns = sp.Piecewise(*[(g, H <= image.sup) for g, image in ascending[:-1]], (ascending[-1][0], True))
    upper_owns = sp.Piecewise(*[(g, H >= image.inf) for g, image in ascending[:0:-1]], (ascending[0][0], True))
    return next((form for form in (lower_owns, upper_owns) if _form_holds(form, f, df)), None)


def _form_holds(form, f, df):
    """The whole form, kinks included, against f' at 40 digits: the final word on whether it is used."""
    gm, fm, dm = _mp(form, H), _mp(f, x), _mp(df, x)
    with mpmath.workdps(_DIGITS):
        try:
            return all(_agree(gm(fm(mpmath.mpf(p))), dm(mpmath.mpf(p))) for p in GRID + (sp.Integer(0),))
        except (ZeroDivisionError, ValueError, TypeError):
            return False


def sup_abs(df):
    """sup over real x of |f'(x)|: (value, exact). Closed form from SymPy where it finds one, else numeric."""
    best, exact = sp.S.Zero, True
    for dfi, domain in _branches(df):
        if domain.is_empty:
            continue
        try:
            if sp.count_ops(sp.diff(to_elementary(dfi), x)) > 25:
                raise NotImplementedError  # SymPy spends seconds, then fails, on long transcendental f''
            lo = sp.calculus.util.minimum(to_elementary(dfi), x, domain)
            hi = sp.calculus.util.maximum(to_elementary(dfi), x, domain)
            value = sp.Max(sp.Abs(lo), sp.Abs(hi))
            if not value.is_number or value.has(sp.nan):
                raise ValueError
        except (NotImplementedError, ValueError, TypeError):
            value, exact = _sup_abs_numeric(dfi, domain), False
            if value is None:
                return None, False
        best = sp.Max(best, value)
    return sp.nsimplify(best) if exact else best, exact


def _sup_abs_numeric(dfi, domain):
    """Grid search of |f'| refined by a local maximiser; sp.oo when |f'| still grows at |x| = 1e6."""
    d = _mp(dfi, x)
    with mpmath.workdps(30):
        far = [mpmath.mpf(s) * 10**k for s in (1, -1) for k in (3, 6)]
        vals = {p: abs(d(p)) for p in far if domain.contains(sp.Float(p)) is sp.true}
        for s in (1, -1):
            if domain.contains(s * 10**6) is sp.true and vals[s * mpmath.mpf(10)**6] > 2 * vals[s * mpmath.mpf(10)**3]:
                return sp.oo
        grid = [mpmath.mpf(p) for p in _points(domain)]
        vals.update({p: abs(d(p)) for p in grid})
        p0 = max(vals, key=vals.get)
        try:
            p1 = mpmath.findroot(lambda t: mpmath.diff(lambda u: abs(d(u)), t), p0)
            v1 = abs(d(p1))
        except (ValueError, ZeroDivisionError):
            v1 = 0
        return sp.Float(max(vals[p0], v1), 15)
