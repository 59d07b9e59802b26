"""parse_expression: what it accepts, and that it refuses everything else quickly without running it."""
import time
from pathlib import Path

import pytest
import sympy as sp

from derive import ExpressionError, parse_expression
from derive.functions import sigmoid, softplus
from derive.parse import X as x


@pytest.mark.parametrize("text, expected", [
    ("x", x),
    ("tanh(x)", sp.tanh(x)),
    ("x*tanh(log(1+exp(x)))", x * sp.tanh(softplus(x))),
    ("1/(1+exp(-x))", sigmoid(x)),
    ("x/(1+exp(-x))", x * sigmoid(x)),
    ("exp(x)/(1+exp(x))", sigmoid(x)),
    ("0.5*x*(1+erf(x/sqrt(2)))", x / 2 * (1 + sp.erf(x / sp.sqrt(2)))),
    ("max(x, 0)", sp.Max(x, 0)),
    ("abs(x) + pi*e", sp.Abs(x) + sp.pi * sp.E),
    ("-x**2 + 2**-3", -x**2 + sp.Rational(1, 8)),
    ("sin(x)**2", sp.sin(x)**2),
    ("0.044715*x + 1e-3", sp.Rational(44715, 10**6) * x + sp.Rational(1, 1000)),
])
def test_accepts_expressions_in_x(text, expected):
    assert parse_expression(text) == expected


SENTINEL = Path("/tmp/rnn_bptt_parse_sentinel")

HOSTILE = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"open('{SENTINEL}', 'w')",
    "().__class__.__bases__[0].__subclasses__()",
    "x.__class__",
    "exec('1')",
    "eval('x')",
    "lambda: x",
    "[x for x in range(10)]",
    "x[0]",
    "y + 1",
    "X + 1",
    "tanh",
    "exp(x, 2)",
    "exp(*[x])",
    "max(x)",
    "log(x=2)",
    "x if x > 0 else 0",
    "x > 0",
    "x == 1",
    "'text'",
    "b'bytes'",
    "True",
    "1j * x",
    "x**10**10**10",
    "9**9**9**9",
    "x**100000",
    "(" * 200 + "x" + ")" * 200,
    "-" * 600 + "x",
    "x" + "+x" * 400,
    "1" * 40 + "*x",
    "1e999*x",
    "x/0",
    "sqrt(-1)",
    "log(0)",
    "x; import os",
    "import os",
    "x := 1",
    "",
    "   ",
    "f'{x}'",
    "x @ x",
    "x // 2",
    "x % 2",
    "x ^ 2",
    "~x",
    "not x",
    "x and x",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_refuses_hostile_text_quickly_and_without_running_it(text):
    SENTINEL.unlink(missing_ok=True)
    start = time.perf_counter()
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    assert time.perf_counter() - start < 1.0, "refusal must be quick"
    assert not SENTINEL.exists(), "the text was executed"
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message and "expression" in message


def test_refusal_names_the_offending_text():
    with pytest.raises(ExpressionError, match=r"name 'os'"):
        parse_expression("x + os")
    with pytest.raises(ExpressionError, match=r"function 'open'"):
        parse_expression("open('f')")
    with pytest.raises(ExpressionError, match=r"attribute .*'x\.real'"):
        parse_expression("x.real")


def test_refuses_non_strings():
    with pytest.raises(ExpressionError, match="must be a string"):
        parse_expression(42)


def test_never_calls_sympify_or_eval(monkeypatch):
    """The parser builds SymPy objects directly: sympify, parse_expr, eval and exec are never reached."""
    import builtins

    def forbidden(*args, **kwargs):
        raise AssertionError("forbidden call")

    monkeypatch.setattr(sp, "sympify", forbidden)
    monkeypatch.setattr(sp, "parse_expr", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert parse_expression("x*tanh(softplus(x)) + max(x, 0.5)") is not None
