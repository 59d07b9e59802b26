"""The activation catalogue: one entry per activation, as data. Everything about an entry is derived.

An entry is a name, a SymPy expression in ``x`` and its parameters (symbols with their values). Piecewise
activations are written with a strict ``x > 0`` on the first branch, so that at the kink the derivative is taken
from the other branch: relu'(0) = 0, leaky_relu'(0) = 0.01, elu'(0) = 1, selu'(0) = scale*alpha, as in PyTorch.

User activations (added with ``python -m codegen add NAME 'EXPR'``) live in the plain data file
``derive/user_activations.json`` as {name: expression text}, or {name: {"expression": text, "keep_input": true}}
for one added with ``--keep-input``; ``make derive`` reads them through ``parse_expression``.
"""
import json
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

from derive.errors import DerivationError
from derive.functions import sigmoid, softplus
from derive.locations import user_file
from derive.parse import X as x, parse_expression

USER_FILE = user_file()  # derive/user_activations.json in a checkout, the data folder when installed
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")


def check_name(name, taken=()):
    """Refuse a name that cannot become a module ``rnn_<name>`` or is already taken."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise DerivationError(f"activation name {name!r} must be a lowercase identifier: a letter, then letters, "
                              f"digits or '_', at most 40 characters")
    if name in taken:
        raise DerivationError(f"activation name {name!r} is already taken")


@dataclass(frozen=True)
class Activation:
    """One catalogue entry: ``expr`` is f(x); ``params`` maps the parameter symbols in it to their values.

    Checked here, where library callers enter as well as the command line: ``name`` must suit a module name
    (``check_name``), ``expr`` must be a SymPy expression and each parameter a SymPy symbol with a number (a SymPy
    number, int or float). Strings are refused: SymPy would evaluate them as Python when substituting.
    Raises DerivationError.

    ``keep_input=True`` asks for accuracy over memory: the kernel keeps E_t and computes f' from it even where f'
    has a form in the output h (tanh: 1 - h^2 is only as good as h's rounding lets it be, absolute error ~eps,
    while f' from E is good to a few ulp relative, also where it is tiny; the cost is one more T x N x H array).
    """

    name: str
    expr: sp.Expr
    params: dict = field(default_factory=dict, hash=False, compare=False)
    keep_input: bool = False

    def __post_init__(self):
        check_name(self.name)
        if not isinstance(self.expr, sp.Expr):
            raise DerivationError(f"activation {self.name!r}: expr must be a SymPy expression in x (text goes "
                                  f"through parse_expression), got {type(self.expr).__name__}: {self.expr!r:.80}")
        if not isinstance(self.params, dict):
            raise DerivationError(f"activation {self.name!r}: params must be a dict of SymPy symbols to numbers, "
                                  f"got {type(self.params).__name__}")
        for symbol, value in self.params.items():
            if not isinstance(symbol, sp.Symbol):
                raise DerivationError(f"activation {self.name!r}: parameter {symbol!r:.80} must be a SymPy Symbol, "
                                      f"got {type(symbol).__name__}")
            number = isinstance(value, sp.Expr) and value.is_number
            if not (number or (isinstance(value, (int, float)) and not isinstance(value, bool))):
                raise DerivationError(f"activation {self.name!r}: parameter {symbol} must be a SymPy number, int or "
                                      f"float, got {type(value).__name__}: {value!r:.80}")

    def bound(self):
        """f(x) with the parameter values substituted."""
        return self.expr.subs(self.params)


alpha, slope, scale = sp.symbols("alpha slope lambda", positive=True)
# exact rationals of the published 32-digit constants: SymPy solves and simplifies rationals, not Floats
SELU_ALPHA = sp.Rational("1.6732632423543772848170429916717")
SELU_SCALE = sp.Rational("1.0507009873554804934193349852946")

CATALOGUE = (
    Activation("identity", x),
    Activation("tanh", sp.tanh(x)),
    Activation("sigmoid", sigmoid(x)),
    Activation("relu", sp.Piecewise((x, x > 0), (0, True))),
    Activation("leaky_relu", sp.Piecewise((x, x > 0), (slope * x, True)), {slope: sp.Rational(1, 100)}),
    Activation("elu", sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True)), {alpha: 1}),
    Activation("selu", scale * sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True)),
               {alpha: SELU_ALPHA, scale: SELU_SCALE}),
    Activation("softplus", softplus(x)),
    Activation("softsign", x / (1 + sp.Abs(x))),
    Activation("silu", x * sigmoid(x)),
    Activation("gelu", x / 2 * (1 + sp.erf(x / sp.sqrt(2)))),
    Activation("gelu_tanh", x / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Rational(44715, 1000000) * x**3)))),
    Activation("mish", x * sp.tanh(softplus(x))),
    Activation("sin", sp.sin(x)),
)


def read_user_file(path=USER_FILE):
    """The user entries {name: text} from ``path`` ({} when it does not exist)."""
    if not Path(path).exists():
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DerivationError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and _entry_ok(v) for k, v in data.items()):
        raise DerivationError(f"{path} must hold one JSON object mapping names to expression strings "
                              f'(or to {{"expression": string, "keep_input": true or false}})')
    return data


def _entry_ok(value):
    return isinstance(value, str) or (
        isinstance(value, dict) and set(value) <= {"expression", "keep_input"} and
        isinstance(value.get("expression"), str) and isinstance(value.get("keep_input", False), bool))


def user_entry(value):
    """(expression text, keep_input) of one entry of the user file."""
    return (value, False) if isinstance(value, str) else (value["expression"], value.get("keep_input", False))


def user_activations(path=USER_FILE, base=CATALOGUE):
    """The user entries of ``path`` parsed into Activations; their names must differ from those in ``base``."""
    taken = {a.name for a in base}
    entries = []
    for name, value in sorted(read_user_file(path).items()):
        check_name(name, taken)
        taken.add(name)
        text, keep_input = user_entry(value)
        entries.append(Activation(name, parse_expression(text), keep_input=keep_input))
    return tuple(entries)


def all_activations(path=USER_FILE, base=CATALOGUE):
    """The built-in catalogue (``base``) followed by the user entries: what ``make derive`` generates."""
    return tuple(base) + user_activations(path, base)
