"""The activation catalogue: one entry per activation, as data. Everything about an entry is derived.

An entry is a name, a SymPy expression in ``x`` and its parameters (symbols with their values). Piecewise
activations are written with a strict ``x > 0`` on the first branch, so that at the kink the derivative is taken
from the other branch: relu'(0) = 0, leaky_relu'(0) = 0.01, elu'(0) = 1, selu'(0) = scale*alpha, as in PyTorch.

User activations (added with ``python -m codegen add NAME 'EXPR'``) live in the plain data file
``derive/user_activations.json`` as {name: expression text}; ``make derive`` reads them through ``parse_expression``.
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


@dataclass(frozen=True)
class Activation:
    """One catalogue entry: ``expr`` is f(x); ``params`` maps the parameter symbols in it to their values."""

    name: str
    expr: sp.Expr
    params: dict = field(default_factory=dict, hash=False, compare=False)

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


def check_name(name, taken=()):
    """Refuse a name that cannot become a module ``rnn_<name>`` or is already taken."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise DerivationError(f"activation name {name!r} must be a lowercase identifier: a letter, then letters, "
                              f"digits or '_', at most 40 characters")
    if name in taken:
        raise DerivationError(f"activation name {name!r} is already taken")


def read_user_file(path=USER_FILE):
    """The user entries {name: text} from ``path`` ({} when it does not exist)."""
    if not Path(path).exists():
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DerivationError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise DerivationError(f"{path} must hold one JSON object mapping names to expression strings")
    return data


def user_activations(path=USER_FILE, base=CATALOGUE):
    """The user entries of ``path`` parsed into Activations; their names must differ from those in ``base``."""
    taken = {a.name for a in base}
    entries = []
    for name, text in sorted(read_user_file(path).items()):
        check_name(name, taken)
        taken.add(name)
        entries.append(Activation(name, parse_expression(text)))
    return tuple(entries)


def all_activations(path=USER_FILE, base=CATALOGUE):
    """The built-in catalogue (``base``) followed by the user entries: what ``make derive`` generates."""
    return tuple(base) + user_activations(path, base)
