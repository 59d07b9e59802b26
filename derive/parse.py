"""User text -> SymPy expression in x, without eval, exec, sympify or parse_expr.

The text is parsed by Python's own parser into a syntax tree (``ast.parse`` builds the tree, it runs nothing), and
the tree is walked node by node against a whitelist: numbers, the name ``x``, the constants ``pi`` and ``e``, the
operators + - * / ** and unary minus, and calls of the named functions in ``FUNCTIONS``. Every other node (names,
attributes, subscripts, lambdas, comprehensions, keyword arguments, strings, ...) is refused with an
``ExpressionError`` that quotes the refused text. Sizes are bounded before anything is built, so that no input can
make SymPy compute for long: text length, nesting depth, node count, literal digits, and the magnitude of numeric
powers (``10**10**10`` is refused rather than evaluated).
"""
import ast
import math
import warnings

import sympy as sp

from derive.errors import ExpressionError
from derive.functions import sigmoid, softplus, to_stable

X = sp.Symbol("x", real=True)

MAX_LENGTH = 500
MAX_DEPTH = 40
MAX_NODES = 400
MAX_LITERAL_DIGITS = 30
MAX_LOG10_MAGNITUDE = 300  # a numeric power whose value would pass 1e300 is refused


def _max(a, b):
    return sp.Max(a, b)


def _min(a, b):
    return sp.Min(a, b)


FUNCTIONS = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "abs": sp.Abs,
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "atan": sp.atan, "asinh": sp.asinh,
    "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh,
    "erf": sp.erf, "max": _max, "min": _min, "sigmoid": sigmoid, "softplus": softplus,
}
ARITY = {"max": 2, "min": 2}
CONSTANTS = {"x": X, "pi": sp.pi, "e": sp.E}

_BINARY = {ast.Add: sp.Add, ast.Sub: lambda a, b: a - b, ast.Mult: sp.Mul, ast.Div: lambda a, b: a / b}


def parse_expression(text):
    """Parse ``text``, an activation written in ``x``, into a SymPy expression; refuse anything else.

    >>> parse_expression("x*tanh(log(1+exp(x)))")
    x*tanh(softplus(x))

    Literal forms of the stable primitives are folded into them (``log(1+exp(u))`` -> ``softplus(u)``,
    ``1/(1+exp(-u))`` -> ``sigmoid(u)``), so the kernels evaluate them without overflow.
    Raises ``ExpressionError`` (a ValueError) naming what was refused.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters long; at most {MAX_LENGTH} are accepted")
    if not text.strip():
        raise ExpressionError("expression is empty")
    _check_depth(text)
    try:
        with warnings.catch_warnings():  # Python warns on "1x" and similar: treat that as the error it is
            warnings.simplefilter("error", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"expression {text!r} is not valid syntax: {e.msg} at column {e.offset}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes; nesting past the parser's own limits
        raise ExpressionError(f"expression {text[:60]!r} cannot be parsed: {e}") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise ExpressionError(f"expression has {nodes} syntax nodes; at most {MAX_NODES} are accepted")
    if _tree_depth(tree.body) > MAX_DEPTH:
        raise ExpressionError(f"expression nests operations deeper than {MAX_DEPTH}")
    try:
        expr = _Builder(text.strip()).build(tree.body)
    except (ArithmeticError, RecursionError, TypeError, AttributeError) as e:
        # SymPy could not build a value from whitelisted parts (an overflow, say): still the user's text
        raise ExpressionError(f"expression {text[:60]!r} has no finite real value SymPy can build: "
                              f"{type(e).__name__}: {e}") from None
    if expr.has(sp.I, sp.zoo, sp.oo, sp.nan):
        raise ExpressionError(f"expression {text!r} evaluates to a complex or infinite value ({expr})")
    return to_stable(expr)


def _tree_depth(node):
    """Depth of the syntax tree, without recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))
    return deepest


def _check_depth(text):
    """Refuse deep bracket nesting before Python's parser sees it (its own limit ends in a RecursionError)."""
    depth = 0
    for i, c in enumerate(text):
        depth += c in "([{"
        depth -= c in ")]}"
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nests brackets deeper than {MAX_DEPTH} (at column {i + 1})")
    if text.count("**") > MAX_DEPTH:
        raise ExpressionError(f"expression has more than {MAX_DEPTH} '**' operators")


class _Builder:
    """Walks a whitelisted syntax tree and builds the SymPy expression bottom-up."""

    def __init__(self, text):
        self.text = text

    def refuse(self, node, what):
        segment = ast.get_source_segment(self.text, node) or self.text
        raise ExpressionError(f"{what} {segment!r} is not allowed in an activation expression "
                              f"(at column {node.col_offset + 1}); allowed: numbers, x, pi, e, + - * / **, "
                              f"and the functions {', '.join(sorted(FUNCTIONS))}")

    def build(self, node):
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                self.refuse(node, "function name without a call")
            self.refuse(node, "name")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.build(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return self.power(node, self.build(node.left), self.build(node.right))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.build(node.left), self.build(node.right)
            if isinstance(node.op, ast.Div) and right.is_zero:
                self.refuse(node, "division by zero")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Call):
            return self.call(node)
        self.refuse(node, f"{type(node).__name__.lower()} syntax")

    def number(self, node):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.refuse(node, "literal")
        segment = ast.get_source_segment(self.text, node) or repr(value)
        if sum(c.isdigit() for c in segment) > MAX_LITERAL_DIGITS:
            self.refuse(node, f"number longer than {MAX_LITERAL_DIGITS} digits")
        if isinstance(value, int):
            return sp.Integer(value)
        if not math.isfinite(value):
            self.refuse(node, "non-finite number")
        # the decimal as typed, exactly: SymPy solves and simplifies rationals, the printers emit floats
        return sp.Rational(segment.replace("_", ""))

    def power(self, node, base, exponent):
        if base.is_number and exponent.is_number:
            # Bound |base ** exponent| before SymPy evaluates it: 10**10**10 would take forever.
            try:
                b, p = abs(complex(sp.N(base, 30))), complex(sp.N(exponent, 30))
            except (TypeError, ValueError, OverflowError):
                self.refuse(node, "power")
            if not (math.isfinite(b) and math.isfinite(p.real)):
                self.refuse(node, f"power beyond 1e{MAX_LOG10_MAGNITUDE} in magnitude")
            if p.imag or (b == 0 and p.real < 0):
                self.refuse(node, "power")
            if b not in (0.0, 1.0) and abs(p.real * math.log10(b)) > MAX_LOG10_MAGNITUDE:
                self.refuse(node, f"power beyond 1e{MAX_LOG10_MAGNITUDE} in magnitude")
        elif exponent.is_number and abs(float(sp.N(exponent))) > 1000:
            self.refuse(node, "exponent above 1000 in magnitude")
        return sp.Pow(base, exponent)

    def call(self, node):
        func = node.func
        if not isinstance(func, ast.Name):
            self.refuse(func, "call of")
        if func.id not in FUNCTIONS:
            self.refuse(func, "function")
        if node.keywords:
            self.refuse(node.keywords[0], "keyword argument")
        arity = ARITY.get(func.id, 1)
        if len(node.args) != arity or any(isinstance(a, ast.Starred) for a in node.args):
            self.refuse(node, f"{func.id} takes exactly {arity} argument{'s' if arity > 1 else ''}; call")
        args = [self.build(a) for a in node.args]
        if func.id in ("exp", "sinh", "cosh") and args[0].is_number:
            # exp(exp(exp(100))) is a number SymPy would try to evaluate for minutes: bound it first
            try:
                small = abs(float(sp.N(args[0], 15))) <= 700
            except (TypeError, ValueError, OverflowError):
                small = False
            if not small:
                self.refuse(node, "exp of a number beyond 700 (it overflows),")
        return FUNCTIONS[func.id](*args)
