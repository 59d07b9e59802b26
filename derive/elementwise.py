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


# The steps of a derivation, in order: ``progress`` hears each name as the step starts, and a failure or a time
# limit is reported with it. "output form" and "sup|f'|" are optional: when SymPy fails there, the derivation goes
# on without an output form (the kernels keep E_t) or with gamma not found.
STEPS = ("checks", "f'", "checks of f'", "kinks", "output form", "sup|f'|")
MAX_SIMPLIFY_OPS = 40  # simplify of a longer f' takes seconds to minutes (tanh nested 12 deep) and is cosmetic
MAX_INVERT_OPS = 60  # solve of a longer branch of f takes minutes; the output form is then not sought
MAX_INVERT_DEGREE = 4  # polynomials of higher degree have no inverse in radicals (x**999 + x: solve never ends)
MAX_EXP_ARGUMENT = 10**6  # exp(u) past this is a number no float holds; mpmath would spend minutes on its digits
_REQUIRED = object()


def derive_elementwise(f, progress=None):
    """f (SymPy expression in x, parameters substituted) -> Elementwise. Raises DerivationError when it cannot.

    ``progress``, when given, is called with each step's name (``STEPS``) as the step starts. Every failure of
    SymPy or mpmath inside a required step becomes a DerivationError naming the expression and the step.
    """
    if not isinstance(f, sp.Expr):  # never sympify: a string would be evaluated as Python
        raise DerivationError(f"activation must be a SymPy expression in x, got {type(f).__name__}: {f!r:.80}")
    step = _Steps(f, progress)
    f = step("checks", _checked_activation, f)
    step.f = f
    df = step("f'", _derivative, f)
    step("checks of f'", _check_derivative, f, df)
    kinks_ = step("kinks", kinks, df)
    df_h = step("output form", output_form, f, df, optional=None)
    gamma, exact = step("sup|f'|", sup_abs, df, optional=(None, False))
    return Elementwise(f=f, df=df, df_h=df_h, gamma=gamma, gamma_exact=exact, kinks=kinks_)


def show(expr, limit=120):
    """``expr`` as text for an error message, cut to ``limit`` characters."""
    text = str(expr)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


class _Steps:
    """Runs the steps of one derivation: tells ``progress`` each step's name, and turns what SymPy raises into a
    DerivationError naming the expression and the step (or into ``optional``, for a step that may fail)."""

    def __init__(self, f, progress):
        self.f, self.progress = f, progress

    def __call__(self, name, fn, *args, optional=_REQUIRED):
        if self.progress is not None:
            self.progress(name)
        try:
            return fn(*args)
        except DerivationError as e:
            if show(self.f) in str(e):
                raise
            raise DerivationError(f"activation {show(self.f)}: {e}") from e  # a helper's refusal, placed
        except Exception as e:  # NotImplementedError from solve, ZeroDivisionError from mpmath, RecursionError...
            if optional is not _REQUIRED:
                return optional
            raise DerivationError(f"activation {show(self.f)}: SymPy failed in step {name!r} "
                                  f"({type(e).__name__}: {show(e, 200)})") from e


def _checked_activation(f):
    f = sp.piecewise_fold(to_stable(f))
    _check_activation(f)
    return f


def _derivative(f):
    return kink_convention(sp.diff(f, x))  # tidies each piece itself


def kinks(df):
    """The finite branch boundaries of f' where its one-sided values differ, sorted."""
    out = set()
    pieces = [(e, d) for e, d in _branches(df) if not d.is_empty]
    try:
        edges = {p for _, d in pieces for p in d.boundary if p.is_finite} if len(pieces) > 1 else set()
    except NotImplementedError:  # a condition SymPy cannot solve (max(tanh(x), x): x - tanh(x) > 0)
        return _numeric_kinks(df)
    for c in edges:
        sides = {sp.N(e.subs(x, c), 30) for e, d in pieces if sp.Union(d, d.boundary).contains(c) is sp.true}
        if len(sides) > 1:
            out.add(c)
    return tuple(sorted(out))


def _numeric_kinks(df):
    """kinks() where SymPy cannot solve the branch conditions: each condition's zeros on the grid, or between two
    grid points where it changes sign (refined by a bracketing root finder), where f' differs on the two sides
    at 30 digits (one side 1e-12 away)."""
    conditions = {r.lhs - r.rhs for pw in df.atoms(sp.Piecewise) for _, c in pw.args
                  for r in sp.sympify(c).atoms(sp.core.relational.Relational)}
    dm, out = _mp(df, x), set()
    with mpmath.workdps(30):
        pts = sorted({mpmath.mpf(p) for p in GRID + (sp.Integer(0),)})
        eps = mpmath.mpf(10) ** -12
        for u in conditions:
            um = _mp(u, x)
            values = [um(p) for p in pts]
            roots = [p for p, v in zip(pts, values) if v == 0]
            for (a, va), (b, vb) in zip(zip(pts, values), zip(pts[1:], values[1:])):
                if va * vb < 0:
                    roots.append(mpmath.findroot(um, (a, b), solver="anderson"))
            for c in roots:
                left, right = dm(c - eps), dm(c + eps)
                if abs(left - right) > mpmath.mpf(10) ** -6 * max(1, abs(right)):
                    out.add(sp.Rational(str(c)) if c in pts else sp.Float(c, 15))
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
    _check_constants(f, f"activation {show(f)}")
    what = f"activation {show(f)} is not real and finite on the whole real line"
    _check_finite(f, what)
    _check_poles(f, what)


FLOAT64_RANGE = (sp.Float("2.2250738585072014e-308"), sp.Float("1.7976931348623157e308"))


def _check_constants(expr, where):
    """Refuse a number in ``expr`` that a float64 cannot hold (x*1e200*1e200): its module could not even import."""
    tiny, huge = FLOAT64_RANGE
    for n in expr.atoms(sp.Number):
        if n != 0 and not tiny <= abs(n) <= huge:
            raise DerivationError(f"{where} has the constant {show(sp.Float(n, 3))}, beyond the range of float64 "
                                  f"(magnitudes {float(tiny):.1e} to {float(huge):.1e}): the kernels cannot hold it")


def _check_finite(expr, what):
    """Refuse ``expr`` when it is undefined, infinite or complex at a grid point (0 and |x| up to 1e3 included)."""
    fm = _mp(expr, x)
    with mpmath.workdps(30):
        for p in GRID + (sp.Integer(0),):
            reason = "undefined, infinite or complex"
            try:
                value = mpmath.mpmathify(fm(mpmath.mpf(p)))
                ok = isinstance(value, mpmath.mpf) and mpmath.isfinite(value)
            except OverflowError as e:
                ok, reason = False, f"beyond any float ({e})"
            except (ZeroDivisionError, ValueError):
                ok = False
            if not ok:
                raise DerivationError(f"{what}: at x = {p} it is {reason}")


def _check_poles(expr, what):
    """Refuse ``expr`` when it is infinite or undefined between the grid points: where a denominator, the argument
    of a log, or the cosine under a tan vanishes on the reals (1/(x - 0.1), tan(x), log(abs(x - 0.1)))."""
    for branch, domain in _branches(expr):
        try:  # a pole at the edge of its branch still makes the branch unbounded: sqrt(abs(x - 0.1))'s f'
            domain = domain.closure
        except NotImplementedError:
            pass
        for u in _must_not_vanish(branch):
            zeros = sp.solveset(u, x, domain)
            # a zero SymPy names is checked at 30 digits; where it names none, a sign change on the grid proves one
            point = next((p for p in _candidates(zeros) if _vanishes(u, p, domain)), None)
            if point is None and zeros.is_empty is not True:
                point = _sign_change(u, domain)
            if point is not None:
                raise DerivationError(f"{what}: {show(u)} = 0 at x = {show(point)}, and there it is infinite "
                                      f"or undefined")


def _must_not_vanish(expr):
    """The sub-expressions of ``expr`` whose real zeros make it infinite or undefined."""
    out = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Pow) and node.exp.is_negative and node.base.has(x):
            out.append(node.base)
        elif isinstance(node, sp.log) and node.args[0].has(x):
            out.append(node.args[0])
        elif isinstance(node, sp.tan) and node.args[0].has(x):
            out.append(sp.cos(node.args[0]))
    return list(dict.fromkeys(out))


def _candidates(zeros, count=5):
    """A few points of a solution set: the elements of a finite set, the images of n = 0, 1, -1, ... of an ImageSet."""
    if isinstance(zeros, sp.FiniteSet):
        return sorted(zeros, key=lambda p: abs(sp.N(p)))[:count]
    if isinstance(zeros, sp.ImageSet) and len(zeros.lamda.variables) == 1:
        return [zeros.lamda(n) for n in (0, 1, -1, 2, -2)[:count]]
    if isinstance(zeros, (sp.Union, sp.Intersection, sp.Complement)):
        return [p for part in zeros.args for p in _candidates(part, count)]
    return []


def _vanishes(u, point, domain):
    try:
        value, where = complex(sp.N(point, 30)), domain.contains(point)
        return abs(value.imag) < 1e-20 and where is not sp.false and abs(sp.N(u.subs(x, point), 30)) < 1e-20
    except (TypeError, ValueError):
        return False


def _sign_change(u, domain):
    """A grid point next to which ``u`` changes sign within ``domain`` (so it vanishes nearby), else None."""
    um = _mp(u, x)
    pts = sorted(set(_points(domain)))
    with mpmath.workdps(30):
        try:
            signs = [mpmath.sign(um(mpmath.mpf(p))) for p in pts]
        except (ZeroDivisionError, ValueError, OverflowError, TypeError):
            return None
    for p, a, b in zip(pts, signs, signs[1:]):
        if a * b < 0:
            return p
    return None


def kink_convention(df):
    """f' with its value at every kink set to the left limit f'(k-), whatever value the raw derivative has there.

    The rule: split the real line at the finite boundaries of f''s pieces (Heaviside, sign, Abs, Max, Min and
    Piecewise all become pieces), take on each open interval the piece that holds there, and close each interval on
    the right, so that at a boundary k the piece of the interval left of k is used: its value at k is the one-sided
    limit f'(k-) (each piece is an elementary expression, continuous on its closed interval). The left limit lies
    in the subgradient interval [min(f'(k-), f'(k+)), max(...)] and gives PyTorch's values for the catalogue
    (relu'(0) = 0, leaky_relu'(0) = 0.01, selu'(0) = scale*alpha), however the user wrote f: ``max(x, 0.1*x)``,
    a Piecewise in either order, ``abs`` and ``min`` alike. Boundaries where the two sides agree are merged away.
    Each piece is then simplified (``_tidy``) on its own. Where SymPy cannot solve for the boundaries, the value at
    a kink is the midpoint of the one-sided values (Heaviside(0) = 1/2), still inside the subgradient interval.
    """
    raw = sp.piecewise_fold(
        df.replace(sp.Heaviside, lambda u, *rest: sp.Piecewise((1, u > 0), (0, u < 0), (sp.S.Half, True))))
    try:
        pieces = [(e, d) for e, d in _branches(raw) if not d.is_empty]
        edges = sorted({p for _, d in pieces for p in d.boundary if p.is_finite and p.is_real})
    except (DerivationError, NotImplementedError):
        # SymPy cannot solve where the pieces meet (max(tanh(x), x)): no left side can be told, so the kink keeps
        # Heaviside(0) = 1/2, the midpoint of the two one-sided values, which lies in the subgradient interval too
        return _tidy(raw)
    if len(pieces) == 1:
        return _tidy(pieces[0][0])
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

    if sp.count_ops(expr) > MAX_SIMPLIFY_OPS:
        return expr
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
    _check_constants(df, f"the derivative of {show(f)}")
    what = f"activation {show(f)} is not differentiable everywhere: its derivative {show(df)} is not finite"
    _check_finite(df, what)
    _check_poles(df, what)


def _branches(f):
    """[(expr, set of x)] covering the reals, one per Piecewise branch (a single branch when f is smooth)."""
    if f.has(sp.Abs, sp.Max, sp.Min, sp.sign):
        f = f.rewrite(sp.Piecewise)
    f = sp.piecewise_fold(f)  # Piecewise(...) + erf(x) -> one Piecewise, so each branch is seen
    if not isinstance(f, sp.Piecewise):
        return [(f, sp.S.Reals)]
    out, rest = [], sp.S.Reals
    for expr, cond in f.args:
        try:
            domain = rest if cond is sp.true else sp.Intersection(rest, cond.as_set())
        except NotImplementedError:  # abs(sin(x)): a kink at every k*pi
            raise DerivationError(f"it changes branch where {show(cond)}, which SymPy cannot solve on the reals "
                                  f"(infinitely many kinks?): only finitely many kinks are supported") from None
        out.append((expr, domain))
        rest = sp.Complement(rest, domain)
    return out


def _mp(expr, var):
    """A 40-digit mpmath function of ``var`` (the named primitives written out first).

    exp, sinh and cosh refuse (OverflowError) an argument past MAX_EXP_ARGUMENT: mpmath would compute a number
    of that many digits' exponent, for minutes (exp(exp(exp(x))) at x = 30), and no float could hold it anyway.
    """
    return sp.lambdify(var, to_elementary(expr), modules=[_BOUNDED, "mpmath"])


def _bounded(name):
    fn = getattr(mpmath, name)

    def bounded(u):
        if isinstance(u, mpmath.mpf) and (u if name == "exp" else abs(u)) > MAX_EXP_ARGUMENT:
            raise OverflowError(f"{name} of {mpmath.nstr(u, 5)}")
        return fn(u)

    bounded.__name__ = f"bounded_{name}"
    return bounded


_BOUNDED = {name: _bounded(name) for name in ("exp", "sinh", "cosh")}


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
        if sp.count_ops(at_inverse) > MAX_INVERT_OPS:
            continue  # simplify would run for minutes (tanh nested 12 deep): no output form is sought
        # tanh(atanh(h)) folds by itself; what solve returns for other branches needs exp form to simplify.
        for candidate in (sp.simplify(at_inverse), sp.simplify(at_inverse.rewrite(sp.exp))):
            candidate = to_stable(min(candidate, sp.factor(candidate), key=sp.count_ops))
            if sp.count_ops(candidate) > MAX_SIMPLIFY_OPS:
                continue  # proving a longer one runs for minutes (tanh nested 5 deep)
            if not candidate.has(x, sp.I) and _verified(candidate, fi, dfi, domain):
                return candidate
    return None


def _inverses(fi, domain):
    """Candidate inverses x = g(h) of h = fi(x) on ``domain``: solveset's finite answers, else solve's."""
    equation = sp.Eq(H, to_elementary(fi))
    if sp.count_ops(fi) > MAX_INVERT_OPS:
        return []
    poly = fi.as_poly(x) if fi.is_polynomial(x) else None
    if poly is not None and poly.degree() > MAX_INVERT_DEGREE:
        return []
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
    difference = to_elementary(g.subs(H, fi) - dfi)
    if sp.count_ops(difference) > MAX_INVERT_OPS or sp.simplify(difference) != 0:
        return False  # unproven; a longer difference would take minutes to simplify (tanh nested 5 deep)
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
    branches = _branches(df)
    if any(d.has(sp.ConditionSet) for _, d in branches):  # branches SymPy cannot delimit: f' as a whole
        value = _sup_abs_numeric(df, sp.S.Reals)
        return (None, False) if value is None else (value, False)
    for dfi, domain in branches:
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
