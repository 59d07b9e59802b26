"""Accuracy of the generated activations against mpmath: the worst error of f and of the backward's f', per dtype.

    python -m verify.accuracy            the table (what README's "Numerical accuracy" section shows)

What is measured, for each activation and for float32 and float64:

- the points: a uniform grid on [-50, 50], log-spaced points near 0 (down to 1e-30) and log-spaced points in both
  tails (1 to 50), each rounded to float32 first, so that the kernel and the reference see the same input in both
  dtypes (and one reference serves both);
- the reference: the derivation's own f and f' (SymPy, before any codegen pass) evaluated by mpmath at 40 digits,
  and again at 80, 160, ... until two precisions agree to 30 digits (1 - tanh(x)^2 at x = 50 needs more than 40);
- f: the generated module's ``activation`` on an array of the dtype;
- the backward's f': the module's ``derivatives`` on the cache the forward pass would keep (h alone when f' is
  taken from the output, E otherwise), i.e. exactly the numbers ``backward`` multiplies by;
- the error in ulps: |computed - exact| / ulp(exact), ulp at exact's magnitude in the dtype, at the points where the
  exact value is a normal number of the dtype (|v| >= the smallest normal; the reference may be 0 elsewhere);
- for an f' taken from the output h, also the worst absolute error in units of eps (its honest bound: h itself is
  rounded, and 1 - h^2 cannot know more about E than h does).
"""
import argparse
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from derive.functions import to_elementary
from derive.parse import X

DTYPES = (np.float32, np.float64)
F_TARGET_ULP = 4
DF_TARGET_ULP = 8
_PRECISIONS = (40, 80, 160, 320, 640)


def grid():
    """The points E (float64 values that float32 holds exactly; sorted, unique)."""
    uniform = np.linspace(-50, 50, 2001)
    near_zero = np.logspace(-30, 0, 121)
    tails = np.logspace(0, np.log10(50), 201)
    points = np.concatenate([uniform, near_zero, -near_zero, tails, -tails])
    return np.unique(points.astype(np.float32)).astype(np.float64)


def _mp(expr):
    return sp.lambdify(X, to_elementary(expr), modules=["mpmath"])


def exact(expr, points):
    """``expr`` (SymPy, in x) at each point, as mpmath numbers good to 30 digits or more (see the module docstring).

    A value is accepted when two successive precisions agree; a zero only at the last precision (a cancellation to
    0 at 40 digits is not yet a zero).
    """
    fn = _mp(expr)
    out = []
    for p in points:
        previous = None
        for dps in _PRECISIONS:
            with mpmath.workdps(dps):
                value = +fn(mpmath.mpf(float(p)))
            if previous is not None and value != 0 and abs(value - previous) <= abs(value) * mpmath.mpf(10) ** -30:
                break
            previous = value
        out.append(value)
    return out


def ulp_errors(computed, reference, dtype):
    """|computed - exact| / ulp(exact) per point, NaN where the exact value is not a normal number of ``dtype``."""
    info = np.finfo(dtype)
    errors = np.full(len(reference), np.nan)
    for i, (c, r) in enumerate(zip(computed, reference)):
        magnitude = abs(float(r))
        if not (float(info.tiny) <= magnitude <= float(info.max)):
            continue
        ulp = mpmath.mpf(float(np.spacing(dtype(magnitude))))
        c = float(c)
        errors[i] = float(abs(mpmath.mpf(c) - r) / ulp) if np.isfinite(c) else np.inf
    return errors


def abs_errors(computed, reference, dtype):
    """|computed - exact| / eps per point (NaN where the exact value is not finite in ``dtype``)."""
    eps = mpmath.mpf(float(np.finfo(dtype).eps))
    out = np.full(len(reference), np.nan)
    for i, (c, r) in enumerate(zip(computed, reference)):
        c = float(c)
        out[i] = float(abs(mpmath.mpf(c) - r) / eps) if np.isfinite(c) else np.inf
    return out


@dataclass(frozen=True)
class Cell:
    """One activation in one dtype: worst errors and where they occur (the E of the worst point)."""

    name: str
    dtype: str
    f_ulp: float
    f_at: float
    df_ulp: float
    df_at: float
    df_from: str           # "E" or "h": what the backward computes f' from
    df_abs_eps: float      # worst |error| / eps of f' (the bound that holds for the output form)

    @property
    def f_ok(self):
        return self.f_ulp <= F_TARGET_ULP

    @property
    def df_ok(self):
        return self.df_ulp <= DF_TARGET_ULP


def _worst(errors, points):
    if np.all(np.isnan(errors)):
        return 0.0, float("nan")
    i = int(np.nanargmax(errors))
    return float(errors[i]), float(points[i])


TARGETS = ("numpy", "numba", "numba_blas", "numba_step")


def computed(module, E, target="numpy"):
    """(f, the backward's f') as the generated ``module`` computes them at the points ``E`` (an array of the dtype).

    "numpy": ``activation_and_derivative``, what the NumPy forward step computes (f' from h where it is taken from
    the output). "numba", "numba_blas", "numba_step": one step of that target's forward with E_1 = the points
    (x = E, V = 1, W = 0, b = 0, h0 = 0: one unit, a batch of len(E) rows, so E_1 is E exactly), then its backward
    with dL/dh_1 = 1, whose dx_1 = delta_1 V = f'(E_1) exactly: the f' that target's backward multiplies by (the
    forward's own where it is kept; where it comes from h, NumPy's f'(h) for "numba" and "numba_blas", the compiled
    step's for "numba_step").
    """
    if target == "numpy":
        return module.activation_and_derivative(E)
    one, zero = np.ones((1, 1), dtype=E.dtype), np.zeros((1, 1), dtype=E.dtype)
    saved = module.BACKEND
    module.BACKEND = target
    try:
        h, cache = module.forward(E.reshape(1, -1, 1), np.zeros((E.size, 1), dtype=E.dtype), one, zero,
                                  np.zeros(1, dtype=E.dtype))
        d = module.backward(np.ones_like(h), cache).dx
    finally:
        module.BACKEND = saved
    return h.reshape(-1), d.reshape(-1)


def measure(module, f, df, dtype, points=None, references=None, target="numpy"):
    """The Cell of the generated ``module`` in ``dtype`` on ``target`` (``computed``), against the SymPy ``f`` and
    ``df`` (in x).

    ``points`` default to ``grid()``; ``references`` may hold (f values, f' values) at them, computed once.
    """
    E = np.asarray(grid() if points is None else points, dtype=dtype)
    with np.errstate(all="ignore"):
        h, d = computed(module, E, target)  # what the forward step computes and backward reads
    assert h.dtype == dtype and d.dtype == dtype, (h.dtype, d.dtype)
    f_ref, df_ref = references or (exact(f, E), exact(df, E))
    f_ulp, f_at = _worst(ulp_errors(h, f_ref, dtype), E)
    df_ulp, df_at = _worst(ulp_errors(d, df_ref, dtype), E)
    df_abs = float(np.nanmax(abs_errors(d, df_ref, dtype)))
    return Cell(module.NAME, np.dtype(dtype).name, f_ulp, f_at, df_ulp, df_at,
                "h" if module.USES_OUTPUT else "E", df_abs)


def measure_all(derivations, load):
    """[Cell] for every derivation (``load(name)`` gives its generated module) and every dtype."""
    cells, points = [], grid()
    for d in derivations:
        references = exact(d.scalar.f, points), exact(d.scalar.df, points)
        cells += [measure(load(d.name), d.scalar.f, d.scalar.df, dtype, points, references) for dtype in DTYPES]
    return cells


def _number(v):
    if v == float("inf"):
        return "inf"
    return f"{v:.1f}" if v < 1e4 else f"{v:.1e}"


def format_table(cells):
    """The cells as a fixed-width table; a `*` marks a value past its target."""
    lines = [f"{'activation':12s} {'dtype':8s} {'f ulp':>9s} {'at E':>10s}   {'from':4s} {'f_ ulp':>9s} "
             f"{'at E':>10s} {'|f_ err|/eps':>12s}".replace("f_", "f'")]
    for c in cells:
        lines.append(
            f"{c.name:12s} {c.dtype:8s} {_number(c.f_ulp):>8s}{'*' if not c.f_ok else ' '} {c.f_at:>10.4g}   "
            f"{c.df_from:4s} {_number(c.df_ulp):>8s}{'*' if not c.df_ok else ' '} {c.df_at:>10.4g} "
            f"{_number(c.df_abs_eps):>12s}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.splitlines()[0])
    parser.add_argument("--activations", help="comma-separated names (default: the built-in catalogue)")
    args = parser.parse_args(argv)
    import generated
    from codegen.build import derive_all
    from derive.catalogue import CATALOGUE

    chosen = [a for a in CATALOGUE if not args.activations or a.name in args.activations.split(",")]
    cells = measure_all(derive_all(chosen), generated.load)
    print(format_table(cells))
    print(f"\nulp errors where the exact value is a normal number; * marks a cell past its target "
          f"(f: {F_TARGET_ULP} ulp, f' from E: {DF_TARGET_ULP} ulp)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
