"""Cell definition text (a ``.cell`` file) -> ``Cell``, plain frozen data; without eval, exec, sympify or parse_expr.

A cell file is declarations, then one equation per line (``#`` starts a comment; the comment lines at the top
become the cell's description):

    cell lstm                                       # the name: generated/cell_lstm.py
    input x[D]                                      # the input x_t, a vector of size D
    state h[H]                                      # states, in the order of forward's arguments h0, c0
    state c[H]
    output h                                        # the state forward returns for every t (default: the first)
    param weight_ih[H, D] = W_ii, W_if, W_ig, W_io  # a parameter stacking blocks of shape (H, D) along rows
    param bias_ih[H] = b_ii, b_if, b_ig, b_io       # a vector parameter; ``param W[H, H]`` is a single block
    i = sigmoid(W_ii @ x + b_ii + W_hi @ h + b_hi)  # an intermediate
    c' = f * c + i * g                              # a new state: c' is c_t, c is c_{t-1}
    h' = o * tanh(c')

Equations are parsed by Python's own parser into a syntax tree (it runs nothing) and walked against a whitelist,
as in ``derive.parse``: numbers, declared names, ``@`` (a parameter block times the input or a previous state),
``+ - * / **`` elementwise, and the differentiable functions of ``derive.parse.FUNCTIONS`` applied elementwise.
Every refusal is a ``CellError`` naming the line, the equation and the offending symbol. Shapes are checked as
the tree is walked: every vector has a size symbol (D, H, ...), and elementwise operands must agree.

Each equation becomes a scalar SymPy expression in stand-ins (the notes' structure): one symbol per matrix product
(``W_ii_x`` for W_ii @ x), per bias block, per previous state (``c``), per new state (``c_next``) and per
intermediate; SymPy then differentiates these scalars (``derive.cell``).
"""
import ast
import builtins
import keyword
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from derive.errors import ExpressionError
from derive.parse import FUNCTIONS, MAX_DEPTH, MAX_LENGTH, MAX_NODES, _Builder, _check_depth, _tree_depth

CELLS_DIR = Path(__file__).with_name("cells")
NON_DIFFERENTIABLE = frozenset({"abs", "max", "min"})  # kinks: gradients of a whole cell would not be exact
MAX_LINES = 200
IDENT = r"[A-Za-z][A-Za-z0-9_]*"
_RESERVED = (set(keyword.kwlist) | set(dir(builtins)) | set(FUNCTIONS)
             | {"np", "math", "sigmoid", "erf", "numba", "pi", "e", "cell", "input", "state", "param", "output"})


class CellError(ExpressionError):
    """A cell definition the engine refuses; the message names the line, the equation and the symbol."""


@dataclass(frozen=True)
class Param:
    """A parameter: ``blocks`` stacked along the rows, each of ``shape`` (size symbols; one entry for a vector)."""

    name: str
    blocks: tuple
    shape: tuple

    @property
    def is_matrix(self):
        return len(self.shape) == 2


@dataclass(frozen=True)
class Product:
    """A matrix product ``block @ operand`` and its scalar stand-in ``symbol`` (block in row ``index`` of param)."""

    symbol: sp.Symbol
    block: str
    param: str
    index: int
    operand: str       # the input's name or a state's name (its previous value)
    rows: sp.Symbol
    cols: sp.Symbol


@dataclass(frozen=True)
class Equation:
    """``target = expr``: ``expr`` is scalar SymPy in stand-ins; ``state`` is the state it updates (None: an
    intermediate). ``line`` and ``text`` are the source, for messages and comments."""

    target: str
    symbol: sp.Symbol
    expr: sp.Expr
    size: sp.Symbol
    state: str
    line: int
    text: str


@dataclass(frozen=True)
class Cell:
    """A parsed cell: declarations, equations (in order) and the products and bias blocks they use."""

    name: str
    description: str
    input: str
    input_size: sp.Symbol
    states: tuple          # ((name, size symbol), ...) in declaration order
    output: str
    params: tuple          # (Param, ...)
    equations: tuple       # (Equation, ...)
    products: tuple        # (Product, ...) in order of first use
    biases: tuple          # ((block name, Param, index), ...) every vector block
    source: str

    def state_symbol(self, name):
        return sp.Symbol(name, real=True)

    def next_symbol(self, name):
        return sp.Symbol(f"{name}_next", real=True)

    @property
    def sizes(self):
        """Every size symbol, in order of first declaration (input first)."""
        out = [self.input_size]
        for _, s in self.states:
            if s not in out:
                out.append(s)
        return tuple(out)


def _refuse(where, message):
    raise CellError(f"{where}: {message}")


def check_cell_name(name, taken=(), where="cell"):
    """Refuse a cell name that cannot become a module ``cell_<name>`` or is already taken."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name) or keyword.iskeyword(name):
        _refuse(where, f"cell name {name!r} must be a lowercase identifier: a letter, then letters, digits or '_', "
                       f"at most 40 characters")
    if name in taken:
        _refuse(where, f"cell name {name!r} is already taken")


def parse_cell_file(path):
    """Read and parse a ``.cell`` file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CellError(f"cannot read cell file {str(path)!r}: {e.strerror if isinstance(e, OSError) else e}") \
            from None
    try:
        return parse_cell(text)
    except CellError as e:
        raise CellError(f"{path.name}: {e}") from None


def parse_cell(text):
    """Parse the text of a cell definition into a ``Cell``; raises ``CellError`` naming what was refused."""
    if not isinstance(text, str):
        raise CellError(f"cell text must be a string, got {type(text).__name__}")
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise CellError(f"cell text has {len(lines)} lines; at most {MAX_LINES} are accepted")
    return _CellParser(lines).parse(text)


class _CellParser:
    def __init__(self, lines):
        self.lines = lines
        self.names = {}        # every name in the cell's namespace -> what declared it (for "name taken")
        self.name = None
        self.input = None
        self.states = []
        self.output = None
        self.params = []
        self.blocks = {}       # block name -> (Param, index)
        self.equations = []
        self.products = {}     # block -> Product
        self.sizes = {}        # size name -> Symbol
        self.defined = {}      # name usable in an expression -> (symbol, size)

    def take(self, name, what, where):
        if not re.fullmatch(IDENT, name) or "__" in name:
            _refuse(where, f"{what} name {name!r} must be an identifier: a letter, then letters, digits or '_' "
                           f"(no '__')")
        if name in _RESERVED or name.endswith(("_next", "_prev", "_t", "_seq")) or name.startswith(("d_", "g_", "J_")):
            _refuse(where, f"{what} name {name!r} is reserved (Python names, function names, and names ending in "
                           f"'_next', '_prev', '_t', '_seq' or starting with 'd_', 'g_', 'J_' are taken by the "
                           f"generated code)")
        if name in self.names:
            _refuse(where, f"{what} name {name!r} is already taken by {self.names[name]}")
        self.names[name] = f"the {what} declared at {where}"

    def size(self, name, where, declare=False):
        name = name.strip()
        if not re.fullmatch(IDENT, name):
            _refuse(where, f"size {name!r} must be a name such as D or H")
        if name not in self.sizes:
            if not declare:
                _refuse(where, f"size {name!r} is not the size of the input or of a state "
                               f"(known: {', '.join(self.sizes) or 'none'})")
            self.take(name, "size", where)
            self.sizes[name] = sp.Symbol(name, integer=True, positive=True)
        return self.sizes[name]

    def parse(self, text):
        description = []
        at_top = True
        for number, raw in enumerate(self.lines, 1):
            where = f"line {number}"
            if len(raw) > MAX_LENGTH:
                _refuse(where, f"line is {len(raw)} characters long; at most {MAX_LENGTH} are accepted")
            line = raw.split("#", 1)[0].strip()
            if not line:
                if at_top and raw.strip().startswith("#"):
                    description.append(raw.strip()[1:].strip())
                continue
            at_top = False
            keyword_, _, rest = line.partition(" ")
            if keyword_ == "cell":
                self.declare_cell(rest.strip(), where)
            elif keyword_ == "input":
                self.declare_input(rest.strip(), where)
            elif keyword_ == "state":
                self.declare_state(rest.strip(), where)
            elif keyword_ == "output":
                self.declare_output(rest.strip(), where)
            elif keyword_ == "param":
                self.declare_param(rest.strip(), where)
            elif "=" in line:
                self.equation(line, number)
            else:
                _refuse(where, f"cannot read {line!r}: expected a declaration (cell, input, state, output, param) "
                               f"or an equation 'name = expression'")
        if self.name is None:
            raise CellError("the cell has no 'cell NAME' line")
        if self.input is None:
            raise CellError("the cell declares no input ('input x[D]')")
        if not self.states:
            raise CellError("the cell declares no state ('state h[H]')")
        updated = {e.state for e in self.equations if e.state}
        for s, _ in self.states:
            if s not in updated:
                raise CellError(f"state {s!r} is never updated: add an equation \"{s}' = ...\"")
        used = self.used_symbols()
        for e in self.equations:
            if e.state is None and e.symbol not in used:
                raise CellError(f"line {e.line}: equation {e.target!r}: intermediate {e.target!r} is never used")
        for p in self.params:
            for k, block in enumerate(p.blocks):
                if p.is_matrix and block not in self.products:
                    raise CellError(f"parameter block {block!r} of {p.name!r} is never used (write {block} @ ...)")
                if not p.is_matrix and sp.Symbol(block, real=True) not in used:
                    raise CellError(f"parameter block {block!r} of {p.name!r} is never used")
            operands = {self.products[b].operand for b in p.blocks if p.is_matrix}
            if len(operands) > 1:
                raise CellError(f"the blocks of {p.name!r} multiply different operands ({', '.join(sorted(operands))})"
                                f": a stacked parameter multiplies one operand; declare separate parameters")
        output = self.output or self.states[0][0]
        biases = tuple((b, p, k) for p in self.params if not p.is_matrix for k, b in enumerate(p.blocks))
        order = {b: i for i, b in enumerate(self.products)}
        return Cell(self.name, " ".join(description), self.input[0], self.input[1], tuple(self.states), output,
                    tuple(self.params), tuple(self.equations), tuple(self.products[b] for b in order), biases, text)

    def used_symbols(self):
        out = set()
        for e in self.equations:
            out |= e.expr.free_symbols
        return out

    def declare_cell(self, rest, where):
        if self.name is not None:
            _refuse(where, "a second 'cell' line")
        check_cell_name(rest, where=where)
        self.name = rest

    def vector(self, rest, where, what):
        m = re.fullmatch(rf"({IDENT})\s*\[\s*({IDENT})\s*\]", rest)
        if not m:
            _refuse(where, f"cannot read {what} declaration {rest!r}: expected NAME[SIZE], e.g. h[H]")
        return m.group(1), m.group(2)

    def declare_input(self, rest, where):
        if self.input is not None:
            _refuse(where, "a second 'input' line: a cell has one input")
        name, size = self.vector(rest, where, "input")
        self.take(name, "input", where)
        self.input = (name, self.size(size, where, declare=True))

    def declare_state(self, rest, where):
        if self.equations:
            _refuse(where, "declarations come before the equations")
        name, size = self.vector(rest, where, "state")
        self.take(name, "state", where)
        self.take(f"{name}0", "initial state", where)
        symbol = self.sizes.get(size) or self.size(size, where, declare=True)
        self.states.append((name, symbol))
        self.defined[name] = (sp.Symbol(name, real=True), symbol)

    def declare_output(self, rest, where):
        if self.output is not None:
            _refuse(where, "a second 'output' line")
        if rest not in dict(self.states):
            _refuse(where, f"output {rest!r} is not a declared state (states: "
                           f"{', '.join(s for s, _ in self.states) or 'none yet'})")
        self.output = rest

    def declare_param(self, rest, where):
        if self.equations:
            _refuse(where, "declarations come before the equations")
        m = re.fullmatch(rf"({IDENT})\s*\[([^\]]*)\]\s*(?:=\s*(.*))?", rest)
        if not m:
            _refuse(where, f"cannot read parameter declaration {rest!r}: expected NAME[ROWS, COLS] or "
                           f"NAME[ROWS] = BLOCK, BLOCK, ...")
        name, dims, blocks = m.group(1), m.group(2).split(","), m.group(3)
        if len(dims) not in (1, 2):
            _refuse(where, f"parameter {name!r} must have one size (a vector) or two (a matrix), got {len(dims)}")
        shape = tuple(self.size(d, where) for d in dims)
        self.take(name, "parameter", where)
        names = [b.strip() for b in blocks.split(",")] if blocks else [name]
        if blocks:
            for b in names:
                self.take(b, f"block of {name!r}", where)
        param = Param(name, tuple(names), shape)
        self.params.append(param)
        for k, b in enumerate(names):
            self.blocks[b] = (param, k)
            if not param.is_matrix:
                self.defined[b] = (sp.Symbol(b, real=True), shape[0])

    def equation(self, line, number):
        target, _, rhs = line.partition("=")
        target = target.strip()
        where = f"line {number}"
        m = re.fullmatch(rf"({IDENT})(')?", target)
        if not m:
            _refuse(where, f"cannot read the left side {target!r}: expected a name, or a state with a prime (h')")
        name, primed = m.group(1), bool(m.group(2))
        label = f"{where}: equation {target!r}"
        states = dict(self.states)
        if primed:
            if name not in states:
                _refuse(label, f"{name!r} is not a declared state; only states take a prime")
            if any(e.state == name for e in self.equations):
                _refuse(label, f"state {name!r} is updated twice")
        elif name in states:
            _refuse(label, f"{name!r} is a state: write \"{name}' = ...\" for its new value")
        if not primed:
            self.take(name, "intermediate", f"{where}")
        expr, size = _VectorBuilder(self, rhs.strip(), label).parse()
        state = name if primed else None
        if size is None:
            _refuse(label, "the right side is a constant; an equation must depend on the input, a state or a "
                           "parameter")
        want = states[name] if primed else size
        if size != want:
            _refuse(label, f"shape mismatch: the right side has size {size}, state {name!r} has size {want}")
        symbol = sp.Symbol(f"{name}_next" if primed else name, real=True)
        self.equations.append(Equation(target, symbol, expr, size, state, number, line))
        self.defined[f"{name}__next" if primed else name] = (symbol, size)


class _VectorBuilder(_Builder):
    """Walks one equation's right side: (scalar SymPy expression in stand-ins, size symbol or None for constants).

    Reuses ``derive.parse._Builder`` for numbers and powers; everything else is checked here against the cell's
    declarations.
    """

    def __init__(self, cell, text, label):
        self.cell = cell
        self.label = label
        self.original = text
        # a prime marks a new state; Python has no primes in names, so h' is read as h__next ('__' is refused in
        # declared names, so no declared name can collide)
        super().__init__(re.sub(rf"({IDENT})'", r"\1__next", text))

    def fail(self, node, message):
        segment = (ast.get_source_segment(self.text, node) or self.text).replace("__next", "'")
        raise CellError(f"{self.label}: {message} (at {segment!r})")

    def refuse(self, node, what):
        segment = (ast.get_source_segment(self.text, node) or self.text).replace("__next", "'")
        raise CellError(f"{self.label}: {what} {segment!r} is not allowed in a cell equation; allowed: numbers, "
                        f"declared names, @ (a parameter block times the input or a state), + - * / **, and the "
                        f"functions {', '.join(sorted(set(FUNCTIONS) - NON_DIFFERENTIABLE))}")

    def parse(self):
        text = self.text
        if not text:
            raise CellError(f"{self.label}: the right side is empty")
        if "'" in text:
            raise CellError(f"{self.label}: a prime (') must follow a state's name, as in h'; strings are not allowed")
        if len(text) > MAX_LENGTH:
            raise CellError(f"{self.label}: the right side is longer than {MAX_LENGTH} characters")
        try:
            _check_depth(text)
            with warnings.catch_warnings():
                warnings.simplefilter("error", SyntaxWarning)
                tree = ast.parse(text, mode="eval")
        except ExpressionError as e:
            raise CellError(f"{self.label}: {e}") from None
        except SyntaxError as e:
            raise CellError(f"{self.label}: {self.original!r} is not valid syntax: {e.msg} at column {e.offset}") \
                from None
        except (ValueError, RecursionError, MemoryError) as e:
            raise CellError(f"{self.label}: {self.original[:60]!r} cannot be parsed: {e}") from None
        if sum(1 for _ in ast.walk(tree)) > MAX_NODES or _tree_depth(tree.body) > MAX_DEPTH:
            raise CellError(f"{self.label}: the right side is too large (at most {MAX_NODES} syntax nodes, "
                            f"depth {MAX_DEPTH})")
        try:
            expr, size = self.vbuild(tree.body)
        except (ArithmeticError, RecursionError, TypeError, AttributeError) as e:
            raise CellError(f"{self.label}: SymPy cannot build a value from {self.original[:60]!r}: "
                            f"{type(e).__name__}: {e}") from None
        except ExpressionError as e:
            if isinstance(e, CellError):
                raise
            raise CellError(f"{self.label}: {e}") from None
        if expr.has(sp.I, sp.zoo, sp.oo, sp.nan):
            raise CellError(f"{self.label}: {self.original!r} evaluates to a complex or infinite value ({expr})")
        return expr, size

    def join(self, node, a, b):
        if a is None or b is None or a == b:
            return a if a is not None else b
        self.fail(node, f"shape mismatch: an operand of size {a} meets one of size {b}")

    def vbuild(self, node):
        if isinstance(node, ast.Constant):
            return self.number(node), None
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            e, s = self.vbuild(node.operand)
            return (-e if isinstance(node.op, ast.USub) else e), s
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            return self.product(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
            (a, sa), (b, sb) = self.vbuild(node.left), self.vbuild(node.right)
            size = self.join(node, sa, sb)
            if isinstance(node.op, ast.Pow):
                return self.power(node, a, b), size
            if isinstance(node.op, ast.Div) and b.is_zero:
                self.fail(node, "division by zero")
            return {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                    ast.Div: lambda: a / b}[type(node.op)](), size
        if isinstance(node, ast.Call):
            return self.vcall(node)
        self.refuse(node, f"{type(node).__name__.lower()} syntax")

    def name(self, node):
        name = node.id
        if name in ("pi", "e"):
            return (sp.pi if name == "pi" else sp.E), None
        if name in self.cell.defined:
            return self.cell.defined[name]
        if name.endswith("__next"):
            state = name[:-6]
            if state in dict(self.cell.states):
                self.fail(node, f"new state {state}' is used before its equation")
            self.fail(node, f"undefined name {state + chr(39)!r}: only states take a prime")
        if name == (self.cell.input or ("",))[0]:
            self.fail(node, f"the input {name!r} may appear only as the right operand of @ (W @ {name})")
        if name in self.cell.blocks:
            self.fail(node, f"matrix {name!r} may appear only as the left operand of @ ({name} @ ...)")
        if name in FUNCTIONS:
            self.refuse(node, "function name without a call")
        self.fail(node, f"undefined name {name!r}")

    def product(self, node):
        left, right = node.left, node.right
        if not isinstance(left, ast.Name) or left.id not in self.cell.blocks or \
                not self.cell.blocks[left.id][0].is_matrix:
            self.fail(node, "the left operand of @ must be a matrix parameter block")
        param, index = self.cell.blocks[left.id]
        states = dict(self.cell.states)
        inp = self.cell.input
        if isinstance(right, ast.Name) and right.id not in states and right.id != inp[0] \
                and right.id not in self.cell.defined and right.id not in self.cell.blocks:
            self.fail(right, f"undefined name {right.id!r}")
        if not isinstance(right, ast.Name) or (right.id not in states and right.id != inp[0]):
            self.fail(node, f"the right operand of @ must be the input {inp[0]!r} or a previous state "
                            f"({', '.join(states)}); products of intermediates are not supported")
        size = inp[1] if right.id == inp[0] else states[right.id]
        rows, cols = param.shape
        if cols != size:
            self.fail(node, f"shape mismatch: {left.id} has {cols} columns, {right.id} has size {size}")
        block = left.id
        existing = self.cell.products.get(block)
        if existing is not None and existing.operand != right.id:
            self.fail(node, f"block {block!r} already multiplies {existing.operand!r}; each block multiplies one "
                            f"operand")
        if existing is None:
            symbol = sp.Symbol(f"{block}_{right.id}", real=True)
            if symbol.name in self.cell.names:
                self.fail(node, f"the product's name {symbol.name!r} is already taken by "
                                f"{self.cell.names[symbol.name]}")
            self.cell.names[symbol.name] = f"the product {block} @ {right.id}"
            existing = Product(symbol, block, param.name, index, right.id, rows, cols)
            self.cell.products[block] = existing
        return existing.symbol, rows

    def vcall(self, node):
        func = node.func
        if not isinstance(func, ast.Name):
            self.refuse(func, "call of")
        if func.id in NON_DIFFERENTIABLE:
            self.fail(node, f"{func.id} is not differentiable everywhere: a cell's gradients must be exact; use a "
                            f"smooth function")
        if func.id not in FUNCTIONS:
            self.fail(func, f"unknown function {func.id!r}")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            self.fail(node, f"{func.id} takes exactly 1 argument")
        arg, size = self.vbuild(node.args[0])
        return FUNCTIONS[func.id](arg), size
