"""Fuzzing parse_expression: any text gives a SymPy expression or an ExpressionError, quickly, and runs nothing."""
import time

import sympy as sp
from hypothesis import HealthCheck, given, settings, strategies as st

from derive import ExpressionError, parse_expression

GOOD = ["x*tanh(log(1+exp(x)))", "0.5*x*(1+erf(x/sqrt(2)))", "max(x, 0.01*x)", "x/(1+abs(x))", "sin(x)**2 + x"]
TOKENS = ["x", "(", ")", "+", "-", "*", "/", "**", ",", "1", "0", "1e308", "10", "exp", "log", "tanh", "max",
          "__import__", "os", ".", "[", "]", "lambda", ":", "'", "\"", "=", " ", "\\x00", "9**9**9", "pi", "e"]
PER_INPUT_SECONDS = 1.0


def check(text):
    start = time.perf_counter()
    try:
        result = parse_expression(text)
    except ExpressionError:
        pass
    else:
        assert isinstance(result, sp.Expr)
    assert time.perf_counter() - start < PER_INPUT_SECONDS, text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_arbitrary_text(text):
    check(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="x()+-*/.,0123456789e abcdefghijklmnopqrstuvwxyz_'[]=:", max_size=60))
def test_expression_like_text(text):
    check(text)


@st.composite
def mutated(draw):
    """A good expression split into characters, with tokens inserted, deleted or replaced."""
    chars = list(draw(st.sampled_from(GOOD)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(chars)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        token = draw(st.sampled_from(TOKENS))
        if action == "insert" or not chars:
            chars.insert(i, token)
        elif action == "delete":
            del chars[min(i, len(chars) - 1)]
        else:
            chars[min(i, len(chars) - 1)] = token
    return "".join(chars)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_token_mutations_of_good_expressions(text):
    check(text)
