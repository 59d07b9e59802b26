"""codegen.inplace_printer: expressions as one ufunc a line into arrays given with out=, scratch arrays reused.

The reference for every check is the expression printer's one-line form (codegen.numpy_printer.KernelPrinter),
evaluated by NumPy with its own temporaries: the two must agree value for value. They compute the same operations,
possibly in another order within a sum or product, so they may differ by the rounding of the intermediate values
(clamped to |u| <= 30 before a function, so at most 30^3 = 2.7e4: 2.7e4 x 2^-52 = 6e-12 each). An array reused while
its value is still needed gives another value altogether, so 1e-9 relative to max(1, |value|) tells the two apart.
"""
import random

import numpy as np
import pytest
import sympy as sp

import generated
from codegen.inplace_printer import array_program
from codegen.numpy_printer import KernelPrinter
from codegen.passes import indicator
from derive.functions import sigmoid, softplus
from generated._support import sigmoid as sigmoid_array

E = sp.Symbol("E", real=True)
NAMESPACE = {"np": np, "sigmoid": sigmoid_array}


def _values():
    """Edges, signed zeros, large and tiny values, and random ones, in float64."""
    rng = np.random.default_rng(0)
    fixed = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 3.0, -3.0, 20.0, -20.0, 1e-300, -1e-300, 700.0, -700.0]
    return np.concatenate([fixed, rng.standard_normal(200) * 4])


def _reference(expr, values):
    with np.errstate(all="ignore"):
        return np.asarray(eval(KernelPrinter().doprint(expr), dict(NAMESPACE, E=values.copy())), dtype=float) \
            * np.ones_like(values)


def _run(program, arrays):
    """Executes the program's lines with ``arrays`` ({name: array}) and fresh scratch arrays."""
    like = next(iter(arrays.values()))
    namespace = dict(NAMESPACE, **arrays, **{s: np.full_like(like, np.nan) for s in program.scratch})
    with np.errstate(all="ignore"):
        exec("\n".join(program.lines), namespace)


def _close(got, want):
    scale = np.maximum(np.abs(want), 1.0)
    both_nan = np.isnan(got) & np.isnan(want)
    same_inf = np.isinf(want) & (got == want)
    ok = both_nan | same_inf | (np.abs(got - want) <= 1e-9 * scale)
    assert ok.all(), f"at E = {_values()[~ok][:5]}: got {got[~ok][:5]}, want {want[~ok][:5]}"


LEAVES = [E, E + 1, sp.Float(0.5) * E, -2 * E]  # each holds E: Max/Min of numbers alone would not compare
UNARY = [sp.exp, sp.tanh, sp.sin, sp.Abs, sigmoid, softplus, lambda u: u**2, lambda u: u**3, lambda u: 1 / (1 + u**2)]


def _random_expr(rng, depth):
    """A random expression of E over sums, products, quotients, Max/Min, the functions above and indicators."""
    if depth == 0:
        return rng.choice(LEAVES)
    kind = rng.randrange(6)
    a, b = _random_expr(rng, depth - 1), _random_expr(rng, depth - 1)
    if kind == 0:
        return a + b - _random_expr(rng, depth - 1)
    if kind == 1:
        return a * b
    if kind == 2:
        return sp.Max(a, b) if rng.random() < 0.5 else sp.Min(a, b)
    if kind == 3:
        u = rng.choice(UNARY)(sp.Max(-30, sp.Min(30, a)))  # bounded: exp and powers stay finite
        return u + (a if rng.random() < 0.5 else 0)  # a read again after its function: a value used twice
    if kind == 4:
        return indicator(a, 0, rng.randrange(4), rng.randrange(2)) * b
    return a / (1 + sp.Abs(b))


@pytest.mark.parametrize("seed", range(60))
def test_random_expressions_agree_with_the_expression_printer_in_every_aliasing(seed):
    """Two results from one program (the one-pass form): the first into a fresh array that also serves as scratch,
    the second over the input itself; and one result into a fresh array. Every value equals the expression
    printer's: an array reused while its value was still needed would show here."""
    rng = random.Random(seed)
    f, g = _random_expr(rng, 3), _random_expr(rng, 3)
    values = _values()
    want_f, want_g = _reference(f, values), _reference(g, values)
    # two results, the second written over the input
    program = array_program([(f, "h"), (g, "E")], {"E"}, fresh={"h"})
    arrays = {"E": values.copy(), "h": np.full_like(values, np.nan)}
    _run(program, arrays)
    _close(arrays["h"], want_f)
    _close(arrays["E"], want_g)
    # one result into a fresh array; the input is left as it was
    program = array_program([(g, "d")], {"E"}, fresh={"d"})
    arrays = {"E": values.copy(), "d": np.full_like(values, np.nan)}
    _run(program, arrays)
    _close(arrays["d"], want_g)
    np.testing.assert_array_equal(arrays["E"], values)


def test_every_line_is_one_operation_into_an_array():
    """tanh's f'(h) = (1 - h)(h + 1): three calls, one scratch array (the result array holds the other factor); the
    sigmoid's h (1 - h) and relu's 1 - [h <= 0] need none: counted by hand from the forms."""
    h = sp.Symbol("h", real=True)
    cases = [((1 - h) * (h + 1), 3, 1), (h * (1 - h), 2, 0), (indicator(h, 0, 1, 0), 2, 0)]
    for expr, calls, scratch in cases:
        program = array_program([(expr, "d")], {"h"}, fresh={"d"})
        assert len(program.lines) == calls and len(program.scratch) == scratch, program
        assert all(line.startswith("np.") and line.endswith(")") and "out=" in line for line in program.lines)


def test_a_comparison_and_its_complement_share_one_call():
    """[h > 0] and 1 - [h > 0] (selu's f'(h)): the comparison is made once."""
    h = sp.Symbol("h", real=True)
    expr = 2 * indicator(h, 0, 2, 1) + (sp.Min(0, h) + 3) * indicator(h, 0, 2, 0)
    program = array_program([(expr, "d")], {"h"}, fresh={"d"})
    assert sum("np.greater(" in line for line in program.lines) == 1


@pytest.mark.parametrize("name", generated.ACTIVATIONS)
def test_modules_write_into_out_and_over_their_argument(name):
    """activation(E, out) and activation_derivative(u, out) of every catalogue module: into a given array, into the
    argument itself, and into a new array, the same values."""
    module = generated.load(name)
    rng = np.random.default_rng(1)
    E_ = rng.standard_normal((3, 4, 5)) * 3
    h = module.activation(E_)
    out = np.empty_like(E_)
    assert module.activation(E_, out=out) is out
    np.testing.assert_array_equal(out, h)
    over = E_.copy()
    module.activation(over, out=over)
    np.testing.assert_array_equal(over, h)
    u = h if module.USES_OUTPUT else E_
    d = module.activation_derivative(u)
    out = np.empty_like(u)
    assert module.activation_derivative(u, out=out) is out
    np.testing.assert_array_equal(out, d)
    over = u.copy()
    assert module.activation_derivative(over, out=over) is over
    np.testing.assert_array_equal(over, d)
    half = u.copy()  # out overlapping the argument without being it
    module.activation_derivative(half[:, :2], out=half[:, 1:3])
    np.testing.assert_array_equal(half[:, 1:3], d[:, :2])
