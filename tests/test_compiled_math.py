"""The support module's scalar functions for the compiled loops (exp, expm1, log1p, tanh, sigmoid, softplus written
so that LLVM vectorises the loops around them) against mpmath, in double, over their whole range: within the ulps
below wherever the exact value is a normal double; overflow, underflow to 0 and subnormal results, +-inf, NaN and
-0 as the math library gives them; and the loops around them in vector code. Skipped, naming the extra, without
Numba."""
import math
import re

import mpmath
import numpy as np
import pytest

numba = pytest.importorskip("numba", reason="Numba (the fast extra) is not installed: no compiled loops to test")

from generated import _support as support  # noqa: E402

# the worst measured over the points below, rounded up: exp 0.89, expm1 0.89, log1p 0.74 (fdlibm's forms); tanh
# 2.08 and sigmoid 1.92 (a division of values each already rounded); softplus 1.06
BOUND_ULP = {"exp": 1.0, "expm1": 1.0, "log1p": 1.0, "tanh": 2.5, "sigmoid": 2.5, "softplus": 1.5}
EXACT = {"exp": mpmath.exp, "expm1": mpmath.expm1, "log1p": mpmath.log1p, "tanh": mpmath.tanh,
         "sigmoid": lambda u: 1 / (1 + mpmath.exp(-u)), "softplus": lambda u: mpmath.log1p(mpmath.exp(u))}
RANGE = {"exp": (-750, 715), "expm1": (-50, 710), "log1p": (-1, 1e6), "tanh": (-30, 30), "sigmoid": (-800, 800),
         "softplus": (-800, 800)}


def _compiled(name):
    fn = getattr(support, f"{name}_scalar")

    # compiled as the kernels' loops are: contraction (FMA) allowed, NumPy's error model
    @numba.njit(fastmath={"contract"}, error_model="numpy")
    def apply(values, out):
        for i in range(values.size):
            out[i] = fn(values[i])
    return apply


def _points(name):
    lo, hi = RANGE[name]
    rng = np.random.default_rng(sorted(RANGE).index(name))
    small = rng.uniform(-1, 1, 1500) * 10.0 ** rng.uniform(-20, 0, 1500)  # near 0, where relative errors show
    edges = [0.3465, 0.3466, -0.3466, 1.0397, -1.0397, 1.0, -1.0, 0.5, 19.06, -19.06, 709.78, -708.4, -745.1,
             -0.9999999999999999, 0.41421356, -0.29289321]
    points = np.concatenate([rng.uniform(lo, hi, 3000), small, edges, np.nextafter(edges, np.inf)])
    return points[(points >= lo) & (points <= hi)]


def _ulp_errors(name, points):
    got = np.empty_like(points)
    _compiled(name)(points, got)
    errors = []
    with mpmath.workdps(40):
        for u, g in zip(points, got):
            exact = EXACT[name](mpmath.mpf(float(u)))
            if not (2.2250738585072014e-308 <= abs(exact) <= 1.7976931348623157e308):
                continue
            errors.append(float(abs(mpmath.mpf(float(g)) - exact) / np.spacing(abs(float(exact)))))
    return errors


@pytest.mark.parametrize("name", sorted(BOUND_ULP))
def test_within_its_ulp_bound_wherever_the_exact_value_is_normal(name):
    errors = _ulp_errors(name, _points(name))
    assert len(errors) > 4000
    assert max(errors) <= BOUND_ULP[name], f"{max(errors):.3g} ulp"


SPECIAL = {  # the math library's values (math.exp, math.expm1, math.log1p, math.tanh; the limits of the other two)
    "exp": [(np.nan, np.nan), (np.inf, np.inf), (-np.inf, 0.0), (710.0, np.inf), (-746.0, 0.0), (0.0, 1.0),
            (-0.0, 1.0), (-745.1, 5e-324), (-740.0, math.exp(-740.0)), (709.78, math.exp(709.78))],
    "expm1": [(np.nan, np.nan), (np.inf, np.inf), (-np.inf, -1.0), (710.0, np.inf), (-50.0, -1.0), (0.0, 0.0),
              (-0.0, -0.0), (5e-324, 5e-324), (709.78, math.expm1(709.78))],
    "log1p": [(np.nan, np.nan), (np.inf, np.inf), (-1.0, -np.inf), (-1.5, np.nan), (-np.inf, np.nan), (0.0, 0.0),
              (-0.0, -0.0), (5e-324, 5e-324), (1e308, math.log1p(1e308))],
    "tanh": [(np.nan, np.nan), (np.inf, 1.0), (-np.inf, -1.0), (800.0, 1.0), (0.0, 0.0), (-0.0, -0.0),
             (5e-324, 5e-324), (-5e-324, -5e-324)],
    "sigmoid": [(np.nan, np.nan), (np.inf, 1.0), (-np.inf, 0.0), (800.0, 1.0), (-800.0, 0.0), (0.0, 0.5)],
    "softplus": [(np.nan, np.nan), (np.inf, np.inf), (-np.inf, 0.0), (800.0, 800.0), (-800.0, 0.0),
                 (0.0, math.log(2.0))],
}


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_special_values_as_the_math_library_gives_them(name):
    points = np.array([u for u, _ in SPECIAL[name]])
    got = np.empty_like(points)
    _compiled(name)(points, got)
    for u, g, (_, want) in zip(points, got, SPECIAL[name]):
        assert (np.isnan(g) and np.isnan(want)) or (g == want and np.signbit(g) == np.signbit(want)), (u, g, want)


@pytest.mark.parametrize("name", sorted(BOUND_ULP))
def test_the_loop_around_each_is_vector_code(name):
    """What these forms are for: a loop applying one of them compiles to instructions on several values at once
    (packed double arithmetic: mulpd, addpd, vfmadd...pd, divpd on any vector width). A loop of Numba's own math.exp
    has none (it calls libm once a value: measured 0 packed operations)."""
    apply = _compiled(name)
    values = np.linspace(-3, 3, 64)
    apply(values, np.empty_like(values))
    asm = apply.inspect_asm(apply.signatures[0])
    packed = re.findall(r"\bv?(?:mul|add|fmadd\d*|div)pd\b", asm)
    assert len(packed) >= 8, f"{len(packed)} packed double operations"
