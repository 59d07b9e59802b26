"""Accuracy of every catalogue activation against mpmath, in float32 and float64 (verify.accuracy measures it), as
the NumPy forward step computes f and f' and as each compiled target does (Numba: "numba", "numba_step", and
"numba_blas" where the module has one; its forward's f, and the f' its backward multiplies by; skipped, naming the
extra, without Numba).

Targets: f within 4 ulp wherever the exact value is a normal number; the backward's f' within 8 ulp, except where it
is computed from the output h and h's own rounding forbids it (``LIMITED_BY_H``: 1 - h^2 cannot know more about E
than h does): there within 2 eps absolute (README "Numerical accuracy" has the table). A cell that no working-precision form can
bring to the target is a strict xfail saying why; should it start passing, the xfail fails and must go.
"""
import numpy as np
import pytest

import generated
from codegen.build import derive_all
from derive import CATALOGUE
from verify.accuracy import DF_TARGET_ULP, DTYPES, F_TARGET_ULP, exact, grid, measure

try:
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

H_FORM_ABS_EPS = 2  # measured worst: 1.3 eps (selu, float32)

ROOT = ("f' has a simple zero at E = {:.4f}: near it |f'| -> 0 while the terms it is summed from stay O(1) and each "
        "is rounded, so the relative error grows without bound as E approaches the zero; no working-precision form "
        "can avoid it without the zero itself, which is transcendental")
ARGUMENT = ("the argument of {} is a rounded polynomial in E, and {} amplifies its half-ulp rounding by |argument| "
            "(hundreds in the tails); no working-precision form computes that argument exactly")
F_XFAIL = {
    ("gelu", "float32"): "Phi(E) is subnormal in float32 below E = -13.0 while E*Phi(E) is still normal: the "
                         "subnormal factor carries fewer bits (worst 4.1 ulp at E = -13.1)",
    ("gelu", "float64"): "SciPy's ndtr takes erfc of a rounded E/sqrt(2), and erfc(u) ~ exp(-u^2) amplifies that "
                         "rounding by 2u^2 (hundreds of ulp in the tail); the compiled targets' ndtr squares E itself, "
                         "split exactly, and meet the target",
    ("gelu_tanh", "float32"): ARGUMENT.format("sigmoid", "sigmoid(v) ~ exp(v) for v < 0"),
    ("gelu_tanh", "float64"): ARGUMENT.format("sigmoid", "sigmoid(v) ~ exp(v) for v < 0"),
}
DF_XFAIL = {
    **{("silu", dt): ROOT.format(-1.2785) for dt in ("float32", "float64")},
    **{("mish", dt): ROOT.format(-1.1915) for dt in ("float32", "float64")},
    **{("gelu", dt): ROOT.format(-0.7518) + "; and " + ARGUMENT.format("exp(-E^2/2)", "exp") for dt in
       ("float32", "float64")},
    ("gelu", "float64"): ROOT.format(-0.7518) + "; and " + ARGUMENT.format("exp(-E^2/2)", "exp") + "; and "
                         "exp(-E^2/2) is subnormal below E = -37.6 while E*phi(E) is still normal",
    **{("gelu_tanh", dt): ROOT.format(-0.7522) + "; and " + ARGUMENT.format("sigmoid", "sigmoid") for dt in
       ("float32", "float64")},
}
# f' from the output h, where f'(E) is tiny once h is within an ulp of its limit (tanh, sigmoid: h -> 1; elu, selu:
# h -> -alpha; softsign: |h| -> 1, where it grows as 2|E| ulp): h has lost E there; absolute error within 2 eps.
LIMITED_BY_H = {"tanh", "sigmoid", "elu", "selu", "softsign"}
CELLS = [(a.name, np.dtype(dt).name) for a in CATALOGUE for dt in DTYPES]


@pytest.fixture(scope="module")
def measured():
    """{(name, dtype, target): Cell}, measured once for the module (the references are shared by both dtypes and
    every target)."""
    out, points = {}, grid()
    for d in derive_all(CATALOGUE):
        references = exact(d.scalar.f, points), exact(d.scalar.df, points)
        module = generated.load(d.name)
        targets = ["numpy"] + (["numba", "numba_step"] + (["numba_blas"] if hasattr(module, "_forward_blas") else [])
                               if numba is not None else [])
        for dtype in DTYPES:
            for target in targets:
                out[d.name, np.dtype(dtype).name, target] = measure(
                    module, d.scalar.f, d.scalar.df, dtype, points, references, target=target)
    return out


@pytest.fixture(scope="module")
def cells(measured):
    """{(name, dtype): Cell} of the NumPy forward step."""
    return {(name, dtype): cell for (name, dtype, target), cell in measured.items() if target == "numpy"}


def _marked(cell, reasons):
    marks = [pytest.mark.xfail(strict=True, reason=reasons[cell])] if cell in reasons else []
    return pytest.param(*cell, marks=marks, id=f"{cell[0]}-{cell[1]}")


@pytest.mark.parametrize("name, dtype", [_marked(c, F_XFAIL) for c in CELLS])
def test_f_within_4_ulp(cells, name, dtype):
    cell = cells[name, dtype]
    assert cell.f_ulp <= F_TARGET_ULP, f"{cell.f_ulp:.3g} ulp at E = {cell.f_at}"


@pytest.mark.parametrize("name, dtype", [_marked(c, DF_XFAIL) for c in CELLS])
def test_backward_f_prime_within_its_bound(cells, name, dtype):
    cell = cells[name, dtype]
    if name in LIMITED_BY_H:
        assert cell.df_from == "h" and cell.df_abs_eps <= H_FORM_ABS_EPS, f"{cell.df_abs_eps:.3g} eps"
    else:  # from E, or from h where h keeps all it needs (softplus: -expm1(-h); relu, leaky_relu)
        assert cell.df_ulp <= DF_TARGET_ULP, f"{cell.df_ulp:.3g} ulp at E = {cell.df_at}"


@pytest.mark.parametrize("name", sorted(LIMITED_BY_H))
def test_output_forms_limited_by_h_are_so(cells, name):
    """The cells held only to the absolute bound do miss the ulp target: the limit is h, not a loose form."""
    assert all(cells[name, np.dtype(dt).name].df_ulp > DF_TARGET_ULP for dt in DTYPES)


# The cells above that cannot meet their target still have a bound: about twice the worst measured (README table),
# so a regression in them shows (before the numerics pass, gelu's f was 1.7e7 ulp off in float32, 9e15 in float64).
LOOSE_F = {("gelu", "float32"): 8, ("gelu", "float64"): 4000, ("gelu_tanh", "float32"): 250,
           ("gelu_tanh", "float64"): 2500}
LOOSE_DF = {("silu", "float32"): 150, ("silu", "float64"): 150, ("gelu", "float32"): 150,
            ("gelu", "float64"): 1e13,  # exp(-E^2/2) subnormal below E = -37.6: 5e12 there
            ("gelu_tanh", "float32"): 400, ("gelu_tanh", "float64"): 2000,
            ("mish", "float32"): 1e5, ("mish", "float64"): 1e5}


@pytest.mark.parametrize("name, dtype", sorted(LOOSE_F))
def test_f_misses_stay_within_their_measured_bound(cells, name, dtype):
    assert cells[name, dtype].f_ulp <= LOOSE_F[name, dtype]


@pytest.mark.parametrize("name, dtype", sorted(LOOSE_DF))
def test_f_prime_misses_stay_within_their_measured_bound(cells, name, dtype):
    assert cells[name, dtype].df_ulp <= LOOSE_DF[name, dtype]


# The compiled loops compute f and f' one value at a time in double (float32 arrays too: E_t is promoted, the loop
# rounds once when it stores), with the support module's exp, expm1, log1p, tanh (tests/test_compiled_math.py): in
# float32 every cell is within half an ulp and a bit (measured 0.5 in all), the double's margin covering what the
# float32 forms lose (gelu's subnormal Phi, gelu_tanh's rounded cubic, the roots of f'); in float64 the same limits
# hold as for NumPy's forms (measured: gelu f' 435 ulp; gelu_tanh f 614, f' 567; silu f' 61; mish f' 2.1e4) but for
# gelu's f, whose Phi (the support module's ndtr_scalar) takes exp(-E^2/2) from E's own square, split exactly: within
# 4 ulp, where SciPy's ndtr (the NumPy target) is 1.8e3 off.
COMPILED_F_XFAIL = {cell: F_XFAIL[cell] for cell in (("gelu_tanh", "float64"),)}
COMPILED_DF_XFAIL = {cell: DF_XFAIL[cell] for cell in (("silu", "float64"), ("mish", "float64"), ("gelu", "float64"),
                                                       ("gelu_tanh", "float64"))}
COMPILED = [(name, dtype, target) for name, dtype in CELLS for target in ("numba", "numba_blas", "numba_step")
            if target != "numba_blas" or hasattr(generated.load(name), "_forward_blas")]


def _compiled(cell, reasons):
    marks = [pytest.mark.xfail(strict=True, reason=reasons[cell[:2]])] if cell[:2] in reasons else []
    return pytest.param(*cell, marks=marks, id="-".join(cell))


def _compiled_cell(measured, name, dtype, target):
    if numba is None:
        pytest.skip("Numba (the fast extra) is not installed: the compiled loops are not measured")
    return measured[name, dtype, target]


@pytest.mark.parametrize("name, dtype, target", [_compiled(c, COMPILED_F_XFAIL) for c in COMPILED])
def test_compiled_f_within_4_ulp(measured, name, dtype, target):
    cell = _compiled_cell(measured, name, dtype, target)
    assert cell.f_ulp <= F_TARGET_ULP, f"{cell.f_ulp:.3g} ulp at E = {cell.f_at}"


@pytest.mark.parametrize("name, dtype, target", [_compiled(c, COMPILED_DF_XFAIL) for c in COMPILED])
def test_compiled_f_prime_within_its_bound(measured, name, dtype, target):
    """The f' the backward pass multiplies by after the compiled forward: the loop's own where f' is kept; where it
    is taken from the output, NumPy's f'(h) of the loop's h ("numba", "numba_blas") or the compiled step's, in
    double ("numba_step")."""
    cell = _compiled_cell(measured, name, dtype, target)
    if name in LIMITED_BY_H:
        assert cell.df_from == "h" and cell.df_abs_eps <= H_FORM_ABS_EPS, f"{cell.df_abs_eps:.3g} eps"
    else:
        assert cell.df_ulp <= DF_TARGET_ULP, f"{cell.df_ulp:.3g} ulp at E = {cell.df_at}"


# (the cells a compiled target misses; where it meets the target, the tests above hold it there)
@pytest.mark.parametrize("name, dtype, target", [c for c in COMPILED if c[:2] in COMPILED_F_XFAIL])
def test_compiled_f_misses_stay_within_their_measured_bound(measured, name, dtype, target):
    assert _compiled_cell(measured, name, dtype, target).f_ulp <= LOOSE_F[name, dtype]


@pytest.mark.parametrize("name, dtype, target", [c for c in COMPILED if c[:2] in COMPILED_DF_XFAIL])
def test_compiled_f_prime_misses_stay_within_their_measured_bound(measured, name, dtype, target):
    assert _compiled_cell(measured, name, dtype, target).df_ulp <= LOOSE_DF[name, dtype]
