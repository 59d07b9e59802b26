"""Polynomials for the support module's compiled erfc and Phi (generated/_support.py, ``erfc_scalar`` and
``ndtr_scalar``), fitted here with mpmath when ``make derive`` renders that module.

    erfc_fits() -> {"near": Fit, "far": Fit}     (rendered by codegen.render into support.py.jinja)

erfc has no vectorisable form in Numba (math.erfc is a libm call, one value at a time), so the compiled loops get one
written as arithmetic and the support module's exp:

- ``near``: erfc(y) itself for 0 <= y <= NEAR (where erfc >= 0.28: no cancellation), a polynomial in y;
- ``far``: g(y) = y exp(y^2) erfc(y) for NEAR <= y <= FAR, a polynomial in t = (y - K)/(y + K): g tends to
  1/sqrt(pi) and is smooth in t up to y = infinity (Weideman's mapping for erfcx), so a low degree fits it, and an
  error in t (rounding) moves g by little. erfc(y) = exp(-y^2) g(y) / y, with y^2 split exactly where it matters
  (the support module's comment says how). From FAR on erfc(y) rounds to 0 in double.

Each is Chebyshev interpolation at DEGREE + 1 Chebyshev points of the interval (mpmath, 50 digits), converted to
monomials in the interval's variable mapped to [-1, 1] (their coefficients stay below 1 in magnitude: Horner's rule
loses nothing to cancellation) and rounded once to double. Measured against mpmath on 20000 points each, evaluated in
double by Horner's rule: near 1.7 eps, far 1.3 eps relative (tests/test_compiled_math.py bounds the whole function).
"""
import functools
from dataclasses import dataclass

import mpmath

NEAR = 0.75  # erfc(y) by a polynomial in y on [0, NEAR]
FAR = 27.3  # erfc(FAR) = 3.5e-326 rounds to 0 in double, as erfc of every larger y
K = 2.0  # the far fit's variable t = (y - K)/(y + K)
NEAR_DEGREE = 16
FAR_DEGREE = 22
DIGITS = 50


@dataclass(frozen=True)
class Fit:
    """p(u) = sum coefficients[k] u^k with u = v * scale + offset in [-1, 1] for v (y, or t) in the fit's interval;
    coefficients as the shortest decimal literals that round-trip (highest power last)."""

    scale: str
    offset: str
    coefficients: tuple


def _chebyshev(f, degree):
    """Chebyshev coefficients of the interpolant of ``f`` (on [-1, 1]) at degree + 1 Chebyshev points."""
    n = degree + 1
    nodes = [(k + mpmath.mpf(1) / 2) * mpmath.pi / n for k in range(n)]
    values = [f(mpmath.cos(a)) for a in nodes]
    c = [2 * mpmath.fsum(v * mpmath.cos(j * a) for v, a in zip(values, nodes)) / n for j in range(n)]
    c[0] /= 2
    return c


def _monomials(c):
    """sum c[k] T_k(u) as monomial coefficients in u, exactly (mpmath)."""
    T = [[mpmath.mpf(1)], [mpmath.mpf(0), mpmath.mpf(1)]]  # T_k's coefficients, T_{k+1} = 2u T_k - T_{k-1}
    while len(T) < len(c):
        nxt = [mpmath.mpf(0)] + [2 * a for a in T[-1]]
        for i, a in enumerate(T[-2]):
            nxt[i] -= a
        T.append(nxt)
    p = [mpmath.mpf(0)] * len(c)
    for ck, Tk in zip(c, T):
        for i, a in enumerate(Tk):
            p[i] += ck * a
    return p


def _fit(f, lo, hi, degree):
    """Fit ``f`` (a function of v, mpmath) on [lo, hi]."""
    lo, hi = mpmath.mpf(lo), mpmath.mpf(hi)
    p = _monomials(_chebyshev(lambda u: f((lo + hi) / 2 + (hi - lo) / 2 * u), degree))
    return Fit(repr(float(2 / (hi - lo))), repr(float(-(hi + lo) / (hi - lo))), tuple(repr(float(a)) for a in p))


@functools.lru_cache(maxsize=1)
def erfc_fits():
    """{"near": Fit of erfc(y) on [0, NEAR], "far": Fit of y exp(y^2) erfc(y) in t on [t(NEAR), t(FAR)]}."""
    with mpmath.workdps(DIGITS):
        def g(t):  # y exp(y^2) erfc(y) at y = K (1 + t)/(1 - t)
            y = K * (1 + t) / (1 - t)
            return y * mpmath.exp(y * y) * mpmath.erfc(y)

        t = lambda y: (mpmath.mpf(y) - K) / (mpmath.mpf(y) + K)  # noqa: E731
        return {"near": _fit(mpmath.erfc, 0, NEAR, NEAR_DEGREE), "far": _fit(g, t(NEAR), t(FAR), FAR_DEGREE)}
