"""Cell -> ``CellDerivation``: the one-step Jacobian of the full state, the BPTT recursion and every parameter
gradient, derived by SymPy from the cell's scalar equations (nothing here is written per cell).

Every equation of a cell is elementwise in its vector arguments except the matrix products, which have scalar
stand-ins (``derive.cellparse``). So the vector chain rule has two kinds of factor only:

    d(elementwise e)/d(vector u) = diag(de/du)        d(W u)/du = W

and, for a new state s' and a previous state s, the Jacobian block is

    ds'/ds = diag(ds'/ds|direct) + sum over products P = W_k s of diag(ds'/dP) W_k

(the vanilla RNN is the case of one product: diag(f'(E)) W). The scalar partials are derived twice: as local
partials of each equation in its direct arguments, combined by the chain rule over the equations (forward mode for
the Jacobian, reverse mode for the adjoints), and as SymPy's derivative of the fully inlined state update; the two
must agree symbolically (checked on every derivation). Local partials are written in the node values the forward
pass computes: where an equation's own right side reappears in its derivative (sigmoid' = sigmoid (1 - sigmoid),
tanh' = 1 - tanh^2) it is replaced by the equation's symbol, so the backward pass reads i (1 - i), not a
recomputed sigmoid.

BPTT, with g_s = dL/ds'_t from outside the step (the loss's own term and what step t+1 sends back):

    adjoint of each node = sum over the equations that use it of (their adjoint) * (local partial)
    dL/ds_{t-1} = (direct adjoint of s) + sum over products P = W_k s of W_k^T dL/dP
    dW_k = sum_t (dL/dP_t) operand_t^T        db = sum_t dL/db_t         dx_t = sum over P = W_k x of W_k^T dL/dP_t
"""
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from derive.cellparse import CELLS_DIR, Cell, CellError, parse_cell_file
from derive.locations import user_cells_dir


@dataclass(frozen=True)
class Assignment:
    """``symbol = expr``: one line of an elementwise block (scalar SymPy in node values and adjoints)."""

    symbol: sp.Symbol
    expr: sp.Expr


@dataclass(frozen=True)
class JacobianBlock:
    """d(new state ``row``)/d(previous state ``col``) = diag(direct) + sum_k diag(factor_k) W_k, for ``terms``
    ((factor_k, Product k), ...)."""

    row: str
    col: str
    direct: sp.Expr
    terms: tuple


@dataclass(frozen=True)
class ParamGrad:
    """The gradient of one parameter block: sum_t adjoint_t operand_t^T (a matrix block, ``operand`` the input or a
    state) or sum_t adjoint_t (a vector block, ``operand`` None)."""

    param: str
    block: str
    index: int
    adjoint: sp.Symbol
    operand: str


@dataclass(frozen=True)
class Carry:
    """dL/d(state)_{t-1} = direct + sum over ``products`` (W_k s) of W_k^T dL/dP_k; ``direct`` is an adjoint
    symbol or None when the state appears only inside products."""

    state: str
    direct: sp.Symbol
    products: tuple


@dataclass(frozen=True)
class CellDerivation:
    """Everything derived for one cell. Scalar expressions are in the cell's stand-in symbols (products, biases,
    previous states ``h``, new states ``h_next``, intermediates) and the adjoint symbols ``d_<name>``;
    ``external[s]`` is the symbol g_s = dL/ds'_t from outside the step.
    """

    cell: Cell
    local_partials: tuple     # ((equation target symbol, argument symbol, d rhs/d arg), ...)
    state_partials: tuple     # ((new state, leaf symbol, total derivative), ...), every nonzero one
    jacobian: tuple           # (JacobianBlock, ...), rows and columns in state order, every nonzero block
    external: dict            # state name -> g_<state>
    adjoints: tuple           # (Assignment, ...): the backward step's elementwise block, in order
    leaf_adjoints: dict       # leaf symbol (product, bias, previous state) -> its adjoint symbol
    param_grads: tuple        # (ParamGrad, ...) in parameter and block order
    carries: tuple            # (Carry, ...) in state order
    input_products: tuple     # the products W_k x: dx_t = sum_k W_k^T dL/dP_k

    @property
    def name(self):
        return self.cell.name


def adjoint_symbol(symbol):
    return sp.Symbol(f"d_{symbol.name}", real=True)


def _local(expr, target, arg):
    """d expr/d arg, with expr itself written back as ``target`` where it reappears (sigmoid' in the output)."""
    d = sp.diff(expr, arg)
    if isinstance(expr, sp.Function) or isinstance(expr, sp.Pow):
        d = d.subs(expr, target)
    return d


def derive_cell(cell):
    """Cell -> CellDerivation. Raises CellError when a derivative is not a closed form or the two derivations
    disagree (neither happens for the whitelisted functions; the check guards the engine itself), and when the
    equations, each intermediate written into the next, nest deeper than SymPy can walk (Python's recursion limit;
    a chain of a dozen intermediates, each a function of the one before)."""
    try:
        return _derive_cell(cell)
    except RecursionError:
        raise CellError(f"cell {cell.name}: its equations, with each intermediate written into the next, nest too "
                        f"deeply for SymPy to differentiate (Python's recursion limit); use fewer intermediates "
                        f"that feed one another") from None


def _derive_cell(cell):
    states = [s for s, _ in cell.states]
    prev = {s: sp.Symbol(s, real=True) for s in states}
    nxt = {s: sp.Symbol(f"{s}_next", real=True) for s in states}
    leaves = ([p.symbol for p in cell.products] + [sp.Symbol(b, real=True) for b, _, _ in cell.biases]
              + [prev[s] for s in states])
    # local partials of each equation in its direct arguments
    local = {}
    for e in cell.equations:
        for arg in sorted(e.expr.free_symbols, key=sp.default_sort_key):
            d = _local(e.expr, e.symbol, arg)
            if d.has(sp.Derivative, sp.Subs):
                raise CellError(f"line {e.line}: equation {e.target!r}: SymPy finds no closed-form derivative "
                                f"in {arg}")
            local[(e.symbol, arg)] = d

    # forward mode over the equations: the total derivative of every node in every leaf
    total = {}
    for e in cell.equations:
        for leaf in leaves:
            acc = sp.S.Zero
            for arg in e.expr.free_symbols:
                inner = sp.S.One if arg == leaf else total.get((arg, leaf), sp.S.Zero)
                if inner != 0:
                    acc += local[(e.symbol, arg)] * inner
            if acc != 0:
                total[(e.symbol, leaf)] = acc
    _check_against_inlined(cell, total, leaves)

    state_partials, jacobian = [], []
    for s in states:
        for leaf in leaves:
            if (nxt[s], leaf) in total:
                state_partials.append((s, leaf, total[(nxt[s], leaf)]))
    for row in states:
        for col in states:
            direct = total.get((nxt[row], prev[col]), sp.S.Zero)
            terms = tuple((total[(nxt[row], p.symbol)], p) for p in cell.products
                          if p.operand == col and (nxt[row], p.symbol) in total)
            if direct != 0 or terms:
                jacobian.append(JacobianBlock(row, col, direct, terms))

    # reverse mode: the adjoint of each node from the equations that use it, newest first
    external = {s: sp.Symbol(f"g_{s}", real=True) for s in states}
    consumers = {}
    for e in cell.equations:
        for arg in e.expr.free_symbols:
            consumers.setdefault(arg, []).append(e)
    adjoints = []
    by_state = {e.symbol: e.state for e in cell.equations}
    for e in reversed(cell.equations):
        terms = [external[by_state[e.symbol]]] if by_state[e.symbol] else []
        terms += [adjoint_symbol(c.symbol) * local[(c.symbol, e.symbol)] for c in consumers.get(e.symbol, ())]
        adjoints.append(Assignment(adjoint_symbol(e.symbol), sp.Add(*terms)))
    leaf_adjoints = {}
    for leaf in leaves:
        uses = consumers.get(leaf, ())
        if not uses:
            continue
        adjoints.append(Assignment(adjoint_symbol(leaf),
                                   sp.Add(*[adjoint_symbol(c.symbol) * local[(c.symbol, leaf)] for c in uses])))
        leaf_adjoints[leaf] = adjoint_symbol(leaf)

    grads = []
    for p in cell.params:
        for k, block in enumerate(p.blocks):
            if p.is_matrix:
                product = next(q for q in cell.products if q.block == block)
                grads.append(ParamGrad(p.name, block, k, leaf_adjoints[product.symbol], product.operand))
            else:
                grads.append(ParamGrad(p.name, block, k, leaf_adjoints[sp.Symbol(block, real=True)], None))
    carries = tuple(Carry(s, leaf_adjoints.get(prev[s]), tuple(q for q in cell.products if q.operand == s))
                    for s in states)
    return CellDerivation(cell, tuple((t, a, d) for (t, a), d in local.items()), tuple(state_partials),
                          tuple(jacobian), external, tuple(adjoints), leaf_adjoints, tuple(grads), carries,
                          tuple(q for q in cell.products if q.operand == cell.input))


def inlined(cell):
    """Each new state as one scalar expression in the leaves (intermediates and new states substituted)."""
    values = {}
    for e in cell.equations:
        values[e.symbol] = e.expr.xreplace(values)
    return {e.state: values[e.symbol] for e in cell.equations if e.state}


def _check_against_inlined(cell, total, leaves):
    """The chain rule over the equations must equal SymPy's derivative of the inlined update, for every pair."""
    values = {}
    for e in cell.equations:
        values[e.symbol] = e.expr.xreplace(values)
    for s, update in inlined(cell).items():
        for leaf in leaves:
            chained = total.get((sp.Symbol(f"{s}_next", real=True), leaf), sp.S.Zero).xreplace(values)
            direct = sp.diff(update, leaf)
            if sp.simplify(sp.expand(chained - direct)) != 0:
                raise CellError(f"cell {cell.name!r}: the chain rule and SymPy's direct derivative of {s}' in "
                                f"{leaf} disagree (an engine error, please report)")


USER_CELLS_DIR = user_cells_dir()  # derive/user_cells in a checkout, the data folder when installed
CELL_DIRS = (CELLS_DIR, USER_CELLS_DIR)  # built-in cells, then those added with `python -m codegen add-cell`


def read_cells(dirs=CELL_DIRS):
    """The cells defined in ``dirs`` (``*.cell`` files), parsed, in name order. A file's name must be its cell's,
    and no name may appear twice."""
    dirs = (dirs,) if isinstance(dirs, (str, Path)) else dirs
    cells = {}
    for folder in dirs:
        for path in sorted(Path(folder).glob("*.cell")):
            cell = parse_cell_file(path)
            if cell.name != path.stem:
                raise CellError(f"{path.name}: declares cell {cell.name!r}; the file must be named {cell.name}.cell")
            if cell.name in cells:
                raise CellError(f"{path}: cell name {cell.name!r} is already taken by a cell in {folder}")
            cells[cell.name] = cell
    return tuple(cells[n] for n in sorted(cells))
