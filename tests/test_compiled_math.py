"""The support module's scalar functions for the compiled loops (exp, expm1, log1p, tanh, sigmoid, softplus, erfc and
ndtr, written so that LLVM vectorises the loops around them) against mpmath, in double, over their whole range: within the ulps
below wherever the exact value is a normal double; overflow, underflow to 0 and subnormal results, +-inf, NaN and
-0 as the math library gives them; and the loops around them in vector code. Skipped, naming the extra, without
Numba."""
import math
import platform
import re

import mpmath
import numpy as np
import pytest

numba = pytest.importorskip("numba", reason="Numba (the fast extra) is not installed: no compiled loops to test")

from generated import _support as support  # noqa: E402

# the worst measured, rounded up by about half an ulp: exp 1.00 (at 0.405), expm1 1.10 (-1.03, just past where the
# series hands over to the reduction), log1p 0.94, tanh 2.01 (0.233: -t/(t + 2), musl's 2-ulp branch), sigmoid 2.45
# (z (1/(1 + z)), two roundings), softplus 1.42, erfc 3.19 (1.89: exp(-q_hi) exp(-q_lo) g/y, four roundings; libm's
# erfc 2.93 on the same points), ndtr 3.61 (-28.5; SciPy's ndtr, which squares a rounded u/sqrt(2), is off by
# hundreds of ulp there); over the points below and 60000 more on [-3, 3] / [-6, 6]
BOUND_ULP = {"exp": 1.5, "expm1": 1.5, "log1p": 1.5, "tanh": 2.5, "sigmoid": 3.0, "softplus": 2.0, "erfc": 3.75,
             "ndtr": 4.0}
EXACT = {"exp": mpmath.exp, "expm1": mpmath.expm1, "log1p": mpmath.log1p, "tanh": mpmath.tanh,
         "sigmoid": lambda u: 1 / (1 + mpmath.exp(-u)), "softplus": lambda u: mpmath.log1p(mpmath.exp(u)),
         "erfc": mpmath.erfc, "ndtr": lambda u: mpmath.erfc(-u / mpmath.sqrt(2)) / 2}
RANGE = {"exp": (-750, 715), "expm1": (-50, 710), "log1p": (-1, 1e6), "tanh": (-30, 30), "sigmoid": (-800, 800),
         "softplus": (-800, 800), "erfc": (-10, 28), "ndtr": (-40, 12)}
# where each form switches (reduction bands, branches) and the worst inputs found
EDGES = [0.3465, 0.3466, -0.3466, 1.0397, -1.0397, -1.0317833401290457, 0.9963447474706042, 1.0, -1.0, 0.5,
         0.25541281188299536, 0.5493061443340549, 0.5104244468170747, 0.23309444391823764, 0.40525327902255626,
         -3.4448758406297166, -1.287127257191865, 19.06, -19.06, 709.78, -708.4, -745.1, -0.9999999999999999,
         0.41421356, -0.29289321, 0.75, -0.75, 1.0606601717798212, -1.0606601717798212, 1.8932269684488219,
         -28.47416452048725, 26.5, 27.2, 27.3, -37.5, -38.4]


def _compiled(name):
    fn = getattr(support, f"{name}_scalar")

    # compiled as the kernels' loops are: contraction (FMA) allowed, NumPy's error model
    @numba.njit(fastmath={"contract"}, error_model="numpy")
    def apply(values, out):
        for i in range(values.size):
            out[i] = fn(values[i])
    return apply


def _points(name):
    """Uniform over the whole range, log-uniform magnitudes of both signs (1e-20 up), dense on [-3, 3], the edges."""
    lo, hi = RANGE[name]
    rng = np.random.default_rng(sorted(RANGE).index(name))
    top = np.log10(max(abs(lo), abs(hi)))
    logs = rng.choice([-1.0, 1.0], 3000) * 10.0 ** rng.uniform(-20, top, 3000)
    points = np.concatenate([rng.uniform(lo, hi, 3000), logs, rng.uniform(-3, 3, 6000), EDGES,
                             np.nextafter(EDGES, np.inf)])
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
    assert len(errors) > 8000
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
    "erfc": [(np.nan, np.nan), (np.inf, 0.0), (-np.inf, 2.0), (0.0, 1.0), (-0.0, 1.0), (27.3, 0.0), (30.0, 0.0),
             (-30.0, 2.0), (1e300, 0.0)],
    "ndtr": [(np.nan, np.nan), (np.inf, 1.0), (-np.inf, 0.0), (0.0, 0.5), (-0.0, 0.5), (-40.0, 0.0), (9.0, 1.0),
             (1e300, 1.0), (-1e300, 0.0)],
}


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_special_values_as_the_math_library_gives_them(name):
    points = np.array([u for u, _ in SPECIAL[name]])
    got = np.empty_like(points)
    _compiled(name)(points, got)
    for u, g, (_, want) in zip(points, got, SPECIAL[name]):
        assert (np.isnan(g) and np.isnan(want)) or (g == want and np.signbit(g) == np.signbit(want)), (u, g, want)


X86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                         reason="reads x86 instruction names in the compiled code")
PACKED_DOUBLE = r"\bv?(?:mul|add|sub|fmadd\d*|div)pd\b"  # mulpd, vaddpd, vfmadd231pd, vdivpd: any vector width
PACKED = r"\bv?(?:mul|add|sub|fmadd\d*|div)p[sd]\b"  # the same, double or single


@pytest.mark.parametrize("name, points", [("erfc", [26.6, 26.8, 27.0, 27.2]), ("ndtr", [-37.6, -38.0, -38.4])])
def test_subnormal_results_within_one_step_of_the_subnormal_grid(name, points):
    """erfc and Phi where their values are subnormal (erfc(y) below 2.2e-308 from y = 26.55, Phi below u = -37.5),
    which the ulp bounds above skip: within one step of the subnormal grid (4.9e-324) of the exact value, as libm's
    erfc is (exp(-q_hi) reaches the subnormals; the other factors are at most 1, so the result is rounded there once
    more)."""
    values = np.array(points)
    got = np.empty_like(values)
    _compiled(name)(values, got)
    with mpmath.workdps(40):
        for u, g in zip(points, got):
            exact = EXACT[name](mpmath.mpf(u))
            assert 5e-324 < exact < 2.2250738585072014e-308, (u, exact)  # subnormal, not 0
            assert abs(mpmath.mpf(float(g)) - exact) <= mpmath.mpf(5e-324), (u, g, exact)


@X86
@pytest.mark.parametrize("name", sorted(BOUND_ULP))
def test_the_loop_around_each_is_vector_code(name):
    """What these forms are for: a loop applying one of them compiles to instructions on several values at once
    (packed double arithmetic). A loop of Numba's own math.exp has none (it calls libm once a value: measured 0
    packed operations), nor did these loops with LLVM's loop vectoriser off (NUMBA_LOOP_VECTORIZE=0)."""
    apply = _compiled(name)
    values = np.linspace(-3, 3, 64)
    apply(values, np.empty_like(values))
    packed = re.findall(PACKED_DOUBLE, apply.inspect_asm(apply.signatures[0]))
    assert len(packed) >= 8, f"{len(packed)} packed double operations"


@X86
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "silu", "gelu_tanh", "gelu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernels_compiled_forward_step_is_vector_code(name, dtype):
    """The same in the generated kernels' _forward_blas, compiled afresh from its source with its own options (the
    cached machine code cannot be read back), in both dtypes (float32 values computed in double): where E is h
    (tanh, sigmoid) and where f' is kept (silu, gelu_tanh: f and f' in one pass). This sees the vector code, not
    which path runs: a runtime overlap test that sends the loop down its scalar path (E and h once given as two
    arguments that alias) shows in timings (README, Performance), not here."""
    import generated

    kernel = generated.load(name)._forward_blas
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**options)(kernel.py_func)
    T, N, H = 2, 3, 16
    h = np.zeros((T, N, H), dtype=dtype)
    args = (h, np.zeros((N, H), dtype=dtype), np.eye(H, dtype=dtype))
    fresh(*((np.zeros_like(h),) + args + (True,) if "for_backward" in kernel.py_func.__code__.co_varnames[
        :kernel.py_func.__code__.co_argcount] else args))
    packed = re.findall(PACKED_DOUBLE, fresh.inspect_asm(fresh.signatures[0]))
    assert len(packed) >= 8, f"{len(packed)} packed double operations"


@X86
@pytest.mark.parametrize("name", ["sigmoid", "silu", "gelu_tanh", "gelu", "selu", "softplus"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernels_compiled_steps_are_vector_code(name, dtype):
    """The same for the steps "numba_step" runs inside NumPy's loops: ``_forward_step`` (E is h for sigmoid, selu and
    softplus; f and f' in one pass for silu and gelu_tanh) and ``_backward_step`` (f'(h) computed there, in double,
    where it comes from h; the kept f'(E_t) read where not: float32 arithmetic there, packed single operations)."""
    import generated

    module = generated.load(name)
    N, H = 3, 16
    a = np.zeros((N, H), dtype=dtype)
    for kernel, args in ((module._forward_step, (a, a.copy(), a.copy(), True) if not module.USES_OUTPUT
                          else (a, a.copy())), (module._backward_step, (a, a.copy(), a.copy(), a.copy()))):
        options = {k: v for k, v in kernel.targetoptions.items() if k not in ("cache", "nopython")}
        fresh = numba.njit(**options)(kernel.py_func)
        fresh(*args)
        packed = re.findall(PACKED, fresh.inspect_asm(fresh.signatures[0]))
        assert len(packed) >= 4, f"{kernel.py_func.__name__}: {len(packed)} packed operations"
