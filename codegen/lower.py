"""CellDerivation -> CellKernel: a typed description of the kernels, printed by a target printer (codegen.cell_printer).

    # [CellDerivation] -> [CellKernel]     lower(derivation)

The description says what each step computes and in which order, with no text in it. Every matrix product is a
``MatMul`` (which operands, which transposed, one step or all steps at once); the elementwise blocks are
``derive.cell.Assignment``s (SymPy):
- ``products``: one matrix product per stacked parameter (all of its blocks at once), with the operand it takes and
  whether it is hoisted out of the time loop (the input's products: one product over all T steps);
- ``forward``: the elementwise block of a step (the cell's equations), in order;
- ``saved``: what forward keeps per step beyond the state sequences: exactly the node values that backward's
  elementwise block or the Jacobian read (LSTM: the gates; GRU: the gates and W_hn h);
- ``backward``: the elementwise adjoint block of a step, with duplicate adjoints merged (``aliases``), so that
  d_W_hi_h, which SymPy derives equal to d_W_ii_x, is computed once;
- ``stores``: the adjoints of each stacked product, kept for all T, so each weight's gradient is one product after
  the loop (sum_t dP_t^T operand_t) and the input's gradient one product too; two stacked products whose adjoints
  are equal block by block share one array;
- ``carries``: dL/d(state)_{t-1} = direct adjoint + dP_t W for the stacked products whose operand is that state;
- ``weight_grads``, ``input_grad``: sum_t dP_t^T operand_t and sum_k dP_k W_k, each one product over all steps;
- ``bias_grads``: each bias block's gradient, from a stored product adjoint when the derivation makes them equal
  (summed once after the loop), else accumulated step by step;
- ``jacobian``: each nonzero block of d(state_t)/d(state_{t-1}), as a diagonal factor and diag(factor) W_k terms.
"""
from dataclasses import dataclass

import sympy as sp

from derive.cell import Assignment
from derive.cellparse import CellError


@dataclass(frozen=True)
class MatMul:
    """One matrix product in the batch-in-rows layout: ``left`` @ ``right``, each transposed when its flag says so.
    ``steps`` is "one" (operands of step t, (N, cols)) or "all" (every step at once: a sequence (T, N, cols) is
    taken as (T*N, cols)). Operands name a parameter, the input, a state (its previous value, in a step), a
    sequence of previous states ``<state>_prev`` (s_0..s_(T-1)), or a store's array."""

    left: str
    left_t: bool
    right: str
    right_t: bool
    steps: str


@dataclass(frozen=True)
class StackedProduct:
    """``operand @ param.T`` for all of ``param``'s blocks at once; block k is columns k*rows:(k+1)*rows of the
    result ``array``. ``blocks`` are (stand-in symbol, index); ``hoisted``: computed for every t before the loop."""

    param: str
    operand: str
    array: str
    rows: sp.Symbol
    cols: sp.Symbol
    count: int
    blocks: tuple
    hoisted: bool
    matmul: MatMul           # operand @ param^T: for every t at once when hoisted, else per step


@dataclass(frozen=True)
class Saved:
    """A node value forward keeps for every step: ``kind`` is "intermediate" or "product"; ``size`` its length."""

    name: str
    kind: str
    size: sp.Symbol


@dataclass(frozen=True)
class Store:
    """The adjoints of one stacked product for every step: ``array`` (T, N, count * rows); ``blocks`` are
    (adjoint symbol, index). ``shared``: an earlier store holds the same adjoints in ``array`` (the LSTM's
    dL/d(weight_ih x_t) and dL/d(weight_hh h_(t-1)) are equal block by block), so nothing is written twice."""

    product: StackedProduct
    array: str
    blocks: tuple
    shared: bool = False


@dataclass(frozen=True)
class CarryStep:
    """dL/d``state``_{t-1} = ``direct`` (a symbol or None) + the ``products`` (dP_t @ param for each stacked
    product of that state)."""

    state: str
    direct: sp.Symbol
    products: tuple


@dataclass(frozen=True)
class BiasGrad:
    """Gradient of block ``index`` of vector ``param``: from ``store`` (its columns of block ``store_index``, summed
    over t and the batch) when not None, else ``adjoint`` summed every step."""

    param: str
    index: int
    size: sp.Symbol
    adjoint: sp.Symbol
    store: Store
    store_index: int


@dataclass(frozen=True)
class JacobianTerm:
    """diag(``factor``) W_k, W_k block ``index`` of ``param`` (``factor`` None with ``param`` None: the direct
    diagonal term diag(``direct``))."""

    factor: sp.Symbol
    param: str
    index: int
    rows: sp.Symbol


@dataclass(frozen=True)
class JacobianBlockK:
    """Block d(``row``)_t/d(``col``)_{t-1}: its position (state indices) and its terms."""

    row: int
    col: int
    terms: tuple


@dataclass(frozen=True)
class CellKernel:
    """Everything a printer needs to write one cell's module; SymPy expressions only in the elementwise blocks."""

    name: str
    description: str
    source: str
    input: str
    input_size: sp.Symbol
    states: tuple            # ((name, size), ...)
    output: str
    params: tuple            # (derive.cellparse.Param, ...)
    biases: tuple            # ((block, param name, index, size), ...)
    products: tuple          # (StackedProduct, ...)
    forward: tuple           # (Assignment, ...) in order
    saved: tuple             # (Saved, ...)
    backward_reads: tuple    # node names backward loads for a step
    externals: tuple         # ((state, symbol g_state), ...)
    backward: tuple          # (Assignment, ...) in order, duplicates merged
    stores: tuple            # (Store, ...)
    carries: tuple           # (CarryStep, ...) in state order
    weight_grads: tuple      # ((param, MatMul), ...): d(param) = sum_t dP_t^T operand_t, all steps in one product
    input_grad: tuple        # (MatMul, ...): d(input) = sum of dP @ param over the input's products
    bias_grads: tuple        # (BiasGrad, ...)
    jacobian_reads: tuple    # node names the Jacobian loads for a step
    jacobian_loads: tuple    # cache fields the Jacobian's step reads them from: states' and saved sequences, hoisted
                             # products
    jacobian_sizes: tuple    # size symbols that slice a block it reads out of a stacked array (a bias, a product)
    jacobian_factors: tuple  # (Assignment, ...): the scalar factors of the Jacobian's blocks
    jacobian: tuple          # (JacobianBlockK, ...)
    derivation: object       # the CellDerivation, for docstrings


def lower(d):
    """CellDerivation -> CellKernel (see the module docstring for each part)."""
    cell = d.cell
    states = [s for s, _ in cell.states]
    # [CellDerivation] -> stacked products: one per (parameter, operand)
    products = []
    for p in cell.params:
        if not p.is_matrix:
            continue
        blocks = tuple(sorted(((q.symbol, q.index) for q in cell.products if q.param == p.name), key=lambda b: b[1]))
        operand = next(q.operand for q in cell.products if q.param == p.name)
        hoisted = operand == cell.input
        products.append(StackedProduct(p.name, operand, f"{p.name}_{operand}", p.shape[0], p.shape[1],
                                       len(p.blocks), blocks, hoisted,
                                       MatMul(operand, False, p.name, True, "all" if hoisted else "one")))
    # backward's block with merged duplicates: an adjoint equal to an earlier one (or to a bare symbol) is an alias
    aliases, seen, backward = {}, {}, []
    for a in d.adjoints:
        expr = a.expr.xreplace(aliases)
        if isinstance(expr, sp.Symbol):
            aliases[a.symbol] = expr
        elif expr in seen:
            aliases[a.symbol] = seen[expr]
        else:
            seen[expr] = a.symbol
            backward.append(Assignment(a.symbol, expr))
    resolve = lambda s: aliases.get(s, s)  # noqa: E731 - one-line lookup

    stores, by_param = [], {}
    for sp_ in products:
        adjoints = tuple((resolve(d.leaf_adjoints[sym]), k) for sym, k in sp_.blocks)
        same = next((st for st in stores if st.blocks == adjoints and not st.shared), None)
        by_param[sp_.param] = Store(sp_, same.array, adjoints, True) if same else \
            Store(sp_, f"d_{sp_.array}", adjoints)
        stores.append(by_param[sp_.param])
    carries = tuple(CarryStep(s, resolve(c.direct) if c.direct is not None else None,
                              tuple(MatMul(st.array, False, st.product.param, False, "one")
                                    for st in stores if st.product.operand == s))
                    for s, c in zip(states, d.carries))
    weight_grads = tuple((st.product.param, MatMul(st.array, True, st.product.operand if st.product.hoisted
                                                   else f"{st.product.operand}_prev", False, "all")) for st in stores)
    input_grad = tuple(MatMul(st.array, False, st.product.param, False, "all") for st in stores if st.product.hoisted)
    stored_symbols = {}
    for st in (st for st in stores if not st.shared):
        for sym, k in st.blocks:
            stored_symbols.setdefault(sym, (st, k))
    bias_grads = []
    for param in (p for p in cell.params if not p.is_matrix):
        adjoints = [resolve(g.adjoint) for g in d.param_grads if g.param == param.name]
        # a store holding every block of this vector in its order: the whole gradient is one sum of it
        whole = next((st for st in stores if not st.shared and [a for a, _ in st.blocks] == adjoints), None)
        for k, adjoint in enumerate(adjoints):
            st, index = (whole, k) if whole else stored_symbols.get(adjoint, (None, None))
            bias_grads.append(BiasGrad(param.name, k, param.shape[0], adjoint, st, index))

    # the Jacobian's factors as named scalars, so that the printer can share their common parts
    factors, blocks = [], []
    for b in d.jacobian:
        terms = []
        if b.direct != 0:
            sym = sp.Symbol(f"J_{b.row}_{b.col}", real=True)
            factors.append(Assignment(sym, b.direct))
            terms.append(JacobianTerm(sym, None, None, None))
        for factor, q in b.terms:
            sym = sp.Symbol(f"J_{b.row}_{q.block}", real=True)
            factors.append(Assignment(sym, factor))
            terms.append(JacobianTerm(sym, q.param, q.index, q.rows))
        blocks.append(JacobianBlockK(states.index(b.row), states.index(b.col), tuple(terms)))

    # what forward keeps: the node values backward's block or the Jacobian reads, beyond states and parameters
    adjoint_names = {a.symbol for a in d.adjoints} | set(d.external.values())
    backward_reads = _reads(backward, adjoint_names)
    jacobian_reads = _reads(factors, adjoint_names)
    intermediates = {e.symbol.name: e.size for e in cell.equations if e.state is None}
    state_products = {q.symbol.name: q.rows for q in cell.products if q.operand != cell.input}
    saved = tuple(Saved(n, "intermediate" if n in intermediates else "product",
                        intermediates.get(n, state_products.get(n)))
                  for n in _ordered(cell, backward_reads | jacobian_reads)
                  if n in intermediates or n in state_products)
    jacobian_loads, jacobian_sizes = _step_loads(cell, jacobian_reads, saved, products)
    taken = {p.name for p in cell.params} | set(states) | {cell.input} | {f"{s}0" for s in states}
    fields = [s.name for s in saved]
    for name in fields + [p.array for p in products if p.hoisted]:  # the names a Cache may hold
        if name in taken or (name in fields and fields.count(name) > 1):
            raise CellError(f"cell {cell.name!r}: the generated cache field {name!r} collides with a declared name")
        taken.add(name)
    return CellKernel(
        cell.name, cell.description, cell.source, cell.input, cell.input_size, cell.states, cell.output,
        cell.params, tuple((b, p.name, k, p.shape[0]) for b, p, k in cell.biases), tuple(products),
        tuple(Assignment(e.symbol, e.expr) for e in cell.equations), saved, tuple(_ordered(cell, backward_reads)),
        tuple(d.external.items()), tuple(backward), tuple(stores), carries, weight_grads, input_grad, tuple(bias_grads),
        tuple(_ordered(cell, jacobian_reads)), jacobian_loads, jacobian_sizes, tuple(factors), tuple(blocks), d)


def _step_loads(cell, reads, saved, products):
    """(cache fields, size symbols) that loading the node values ``reads`` of one step takes: the sequence of each
    state read as s_(t-1) or s_t, of each saved value, and the hoisted product holding a block read; and the size of
    every block sliced out of a stacked array (a bias block of a stacked vector, a block of a product of several),
    in the order the cache and the states list them."""
    states = [s for s, _ in cell.states]
    read_states = {s for s in states if s in reads or f"{s}_next" in reads}
    saved_names = {s.name for s in saved}
    hoisted = [p for p in products if p.hoisted and any(b.name in reads and b.name not in saved_names
                                                        for b, _ in p.blocks)]
    fields = [s for s in states if s in read_states] + [s.name for s in saved if s.name in reads]
    fields += [p.array for p in hoisted]
    sizes = {p.rows for p in hoisted if p.count > 1}
    counts = {p.name: len(p.blocks) for p in cell.params}
    sizes |= {p.shape[0] for b, p, _ in cell.biases if b in reads and b != p.name and counts[p.name] > 1}
    return tuple(fields), tuple(n for n in dict.fromkeys(n for _, n in cell.states) if n in sizes)


def _reads(assignments, exclude):
    """The node values a block reads: free symbols that no line of it assigns and that are not adjoints."""
    assigned = {a.symbol for a in assignments}
    out = set()
    for a in assignments:
        out |= {s.name for s in a.expr.free_symbols if s not in assigned and s not in exclude}
    return out


def _ordered(cell, names):
    """``names`` in a fixed order: states, then new states, intermediates, products, biases as declared."""
    order = [s for s, _ in cell.states] + [f"{s}_next" for s, _ in cell.states]
    order += [e.symbol.name for e in cell.equations if e.state is None]
    order += [q.symbol.name for q in cell.products] + [b for b, _, _ in cell.biases]
    return [n for n in order if n in names]
