"""CellKernel -> NumPy source lines: every arithmetic line of a cell's kernels, printed from the description.

    # [CellKernel] -> {section: [line]}     NumpyCellPrinter(kernel).sections()

The template (codegen/templates/cell_module.py.jinja) only places these lines inside function definitions with
their docstrings. Elementwise blocks go through ``codegen.passes.prepare`` and ``codegen.numpy_printer``'s
``KernelPrinter``; their common subexpressions are shared as temporaries ``_tmp0``, ``_tmp1``, ... among the lines
of one dependency level (two lines of the same level never read each other, so a shared temporary can be computed
before both). Arrays are time-major with the batch in rows, so W u is printed as ``u @ W.T``.
"""

import sympy as sp

from codegen.numpy_printer import KernelPrinter, returned
from codegen.passes import prepare, shared_sigmoids


def span(k, size):
    """The slice of block ``k`` of size ``size`` in a stacked axis: ':H', 'H:2 * H', ..."""
    s = str(size)
    start = "" if k == 0 else (s if k == 1 else f"{k} * {s}")
    return f"{start}:{s if k == 0 else f'{k + 1} * {s}'}"


def stacked(count, size):
    return str(size) if count == 1 else f"{count} * {size}"


def wrap_call(head, items, tail=")", width=112):
    """``head`` + comma-separated ``items`` + ``tail`` as lines of at most ``width`` characters, continuation lines
    aligned after ``head``'s opening parenthesis."""
    lines, current = [], head
    for k, item in enumerate(items):
        piece = item + ("," if k < len(items) - 1 else tail)
        if current != head and len(current) + 1 + len(piece) > width:
            lines.append(current.rstrip())
            current = " " * len(head) + piece
        else:
            current = current + ("" if current == head else " ") + piece
    return lines + [current]


def wrap_sum(head, terms, width=112):
    """``head`` + the sum of ``terms`` + ")" as lines of at most ``width`` characters (``head`` opens a bracket)."""
    lines, current = [], head
    for k, term in enumerate(terms):
        piece = ("" if k == 0 else "+ ") + term + (")" if k == len(terms) - 1 else "")
        if current != head and len(current) + 1 + len(piece) > width:
            lines.append(current.rstrip())
            current = " " * len(head) + piece
        else:
            current = current + ("" if current == head else " ") + piece
    return lines + [current]


def _levels(assignments):
    """Group assignments into dependency levels: a line's level is one past the highest level of any line whose
    symbol it reads."""
    level, groups = {}, []
    for a in assignments:
        lv = max((level[s] + 1 for s in a.expr.free_symbols if s in level), default=0)
        level[a.symbol] = lv
        while len(groups) <= lv:
            groups.append([])
        groups[lv].append(a)
    return groups


def block_lines(assignments, comments=None, temps=None, printer=None):
    """Lines computing each ``symbol = expr`` in order, with CSE inside each dependency level; ``printer`` is the
    elementwise printer of the target (NumPy's ``KernelPrinter`` when None)."""
    printer = printer or KernelPrinter()
    temps = temps if temps is not None else sp.numbered_symbols("_tmp")
    comments = comments or {}
    lines = []
    for group in _levels(assignments):
        # sigmoids sharing exp(-|u|) within a level written out, as in the RNN's one-pass forward step (the LSTM's
        # tanh'(c) = 4 sigmoid(2c) sigmoid(-2c): one exp, not two sigmoids)
        prepared = shared_sigmoids([prepare(a.expr) for a in group])
        replacements, reduced = sp.cse(prepared, symbols=temps, order="canonical")
        lines += [f"{printer.doprint(s)} = {printer.doprint(v)}" for s, v in replacements]
        for a, r in zip(group, reduced):
            note = comments.get(a.symbol)
            lines.append(f"{a.symbol.name} = {printer.doprint(r)}" + (f"  # {note}" if note else ""))
    return lines


class NumpyCellPrinter:
    """Prints the NumPy target of one CellKernel: ``sections()`` -> {name: [line]} and the module's constants."""

    def __init__(self, kernel):
        self.k = kernel
        self.states = [s for s, _ in kernel.states]
        self.size = dict(kernel.states)
        self.args = [kernel.input] + [f"{s}0" for s in self.states] + [p.name for p in kernel.params]
        reads = set(kernel.backward_reads) | set(kernel.jacobian_reads)
        self.hoisted_kept = [p for p in kernel.products if p.hoisted and any(s.name in reads for s, _ in p.blocks)]
        self.cache_fields = (self.args + self.states + [s.name for s in kernel.saved]
                             + [p.array for p in self.hoisted_kept])

    # constants -------------------------------------------------------------------------------------------------
    def shapes(self):
        """{argument: labels of its shape}: what check_arguments validates, e.g. weight_ih: ("4*H", "D")."""
        k = self.k
        out = {k.input: ("T", "N", str(k.input_size))}
        out.update({f"{s}0": ("N", str(n)) for s, n in k.states})
        for p in k.params:
            rows = str(p.shape[0]) if len(p.blocks) == 1 else f"{len(p.blocks)}*{p.shape[0]}"
            out[p.name] = (rows,) + tuple(str(c) for c in p.shape[1:])
        return out

    def grads_fields(self):
        return [f"d{a}" for a in self.args]

    # the target's array constructors (codegen.cell_torch_printer prints the same lines for PyTorch) ------------
    @staticmethod
    def elementwise():
        return KernelPrinter()

    @staticmethod
    def empty(shape, like):
        return f"np.empty({shape}, dtype={like}.dtype)"

    @staticmethod
    def zeros(shape, like):
        return f"np.zeros({shape}, dtype={like}.dtype)"

    @staticmethod
    def zeros_like(name):
        return f"np.zeros_like({name})"

    @staticmethod
    def concatenate(items):
        return f"np.concatenate(({items}))"

    returned = staticmethod(returned)  # the output as forward returns it: a read-only view

    # shared pieces -----------------------------------------------------------------------------------------------
    def sizes_from_cache(self, only=None):
        """The sizes, from the arguments: T, N and the input's always, each state's (of ``only``; None: all)."""
        k = self.k
        lines = [f"_T, _N, {k.input_size} = {k.input}.shape"]
        done = {k.input_size}
        for s, n in k.states:
            if n not in done and (only is None or n in only):
                lines.append(f"{n} = {s}0.shape[1]")
                done.add(n)
        return lines

    def unpack_cache(self):
        k = self.k
        lines = [f"{', '.join(self.args)} = cache[:{len(self.args)}]"]
        lines += [f"_{s}_seq = cache.{s}" for s in self.states]
        lines += [f"_{s.name}_seq = cache.{s.name}" for s in k.saved]
        lines += [f"_{p.array} = cache.{p.array}" for p in self.hoisted_kept]
        return lines + self.sizes_from_cache()

    def bias_blocks(self, names=None):
        """Each bias block (of ``names``; None: all) as a view of its stacked vector (before the loop)."""
        return [f"{b} = {p}[{span(i, n)}]" if self._count(p) > 1 else f"{b} = {p}"
                for b, p, i, n in self.k.biases if (names is None or b in names) and b != p]

    def _whole_bias_sums(self):
        """{vector param: store array} where every block k of the parameter is block k of one store of as many
        blocks: its gradient is then one sum of that array."""
        out = {}
        for p in self.k.params:
            grads = [b for b in self.k.bias_grads if b.param == p.name]
            if p.is_matrix or not grads or any(b.store is None for b in grads):
                continue
            stores = {b.store.array for b in grads}
            if len(stores) == 1 and all(b.store_index == b.index for b in grads) \
                    and grads[0].store.product.count == len(p.blocks):
                out[p.name] = stores.pop()
        return out

    def matmul(self, m):
        """The NumPy text of a MatMul: sequences taken as (T*N, cols) when it spans all steps, row t of a stored
        array in a step."""
        return f"{self._operand(m.left, m.steps)}{'.T' if m.left_t else ''} @ " \
               f"{self._operand(m.right, m.steps)}{'.T' if m.right_t else ''}"

    def _operand(self, name, steps):
        k = self.k
        params = {p.name for p in k.params}
        stores = {st.array: stacked(st.product.count, st.product.rows) for st in k.stores}
        if name in params:
            return name
        if name in stores:
            return f"_{name}[_t]" if steps == "one" else f"_{name}.reshape(_T * _N, {stores[name]})"
        if steps == "one":
            return name  # the input at t, or a state's previous value
        if name == k.input:
            return f"{name}.reshape(_T * _N, {k.input_size})"
        state = name[:-len("_prev")]
        return f"_{name}.reshape(_T * _N, {self.size[state]})"

    @staticmethod
    def columns(count, k, rows):
        """Index suffix selecting block ``k`` along the last of three axes: ', :, H:2 * H', or '' for one block."""
        return f", :, {span(k, rows)}" if count > 1 else ""

    def _count(self, param):
        return next(len(p.blocks) for p in self.k.params if p.name == param)

    def loads(self, names):
        """The node values of step _t that a block reads, from the cache's arrays."""
        k = self.k
        lines = []
        block_of = {s.name: (p, i) for p in k.products for s, i in p.blocks}
        saved = {s.name for s in k.saved}
        for n in names:
            if n in self.states:
                lines.append(f"{n} = {n}0 if _t == 0 else _{n}_seq[_t - 1]  # {n}_(t-1)")
            elif n.endswith("_next") and n[:-5] in self.states:
                lines.append(f"{n} = _{n[:-5]}_seq[_t]  # {n[:-5]}_t")
            elif n in saved:
                lines.append(f"{n} = _{n}_seq[_t]")
            elif n in block_of:
                p, i = block_of[n]
                lines.append(f"{n} = _{p.array}[_t{self.columns(p.count, i, p.rows)}]")
        return lines

    # sections ----------------------------------------------------------------------------------------------------
    def sections(self):
        return dict(forward=self.forward(), backward=self.backward(), factors=self.factors(),
                    jacobian=self.jacobian(), jvp=self.jvp(), vjp=self.vjp())

    def forward(self):
        k = self.k
        lines = [f"_T, _N, {k.input_size} = {k.input}.shape"]
        done = {k.input_size}
        for s, n in k.states:
            if n not in done:
                lines.append(f"{n} = {s}0.shape[1]")
                done.add(n)
        for s, n in k.states:
            lines.append(f"_{s}_seq = {self.empty(f'(_T, _N, {n})', k.input)}  # {s}_1..{s}_T")
        for s in k.saved:
            lines.append(f"_{s.name}_seq = {self.empty(f'(_T, _N, {s.size})', k.input)}  # kept for backward")
        for p in k.products:
            if p.hoisted:
                lines.append(f"_{p.array} = ({self.matmul(p.matmul)}).reshape(_T, _N, {stacked(p.count, p.rows)})"
                             f"  # every block, every t: one product")
        lines += self.bias_blocks()
        lines.append(f"{', '.join(self.states)} = {', '.join(s + '0' for s in self.states)}  # at t = 1")
        lines.append("for _t in range(_T):")
        body = []
        for p in k.products:
            if not p.hoisted:
                names = ", ".join(f"{b} @ {p.operand}" for b, _ in self._block_names(p))
                single = p.count == 1 and p.blocks[0][0].name == p.array  # the product is its one block
                body.append(f"{'' if single else '_'}{p.array} = {self.matmul(p.matmul)}  # {names}"
                            f"{'' if single else ': one product'}")
        for p in k.products:
            for sym, i in p.blocks:
                if p.hoisted:
                    body.append(f"{sym.name} = _{p.array}[_t{self.columns(p.count, i, p.rows)}]")
                elif p.count > 1:
                    body.append(f"{sym.name} = _{p.array}[:, {span(i, p.rows)}]")
                elif sym.name != p.array:
                    body.append(f"{sym.name} = _{p.array}")
        body += block_lines(k.forward, {e.symbol: e.text for e in k.derivation.cell.equations},  # source as comment
                            printer=self.elementwise())
        for s in k.saved:
            body.append(f"_{s.name}_seq[_t] = {s.name}")
        for s in self.states:
            body.append(f"_{s}_seq[_t] = {s}_next")
        body.append(f"{', '.join(self.states)} = {', '.join(s + '_next' for s in self.states)}")
        lines += ["    " + b for b in body]
        cache = [self.args, [f"_{s}_seq" for s in self.states], [f"_{s.name}_seq" for s in k.saved],
                 [f"_{p.array}" for p in self.hoisted_kept]]
        lines += wrap_call(f"return {self.returned(f'_{k.output}_seq')}, Cache(", [n for group in cache for n in group])
        return lines

    def _block_names(self, p):
        return [(next(q.block for q in self.k.derivation.cell.products if q.symbol == s), i) for s, i in p.blocks]

    def backward(self):
        k = self.k
        lines = self.unpack_cache()
        for s in self.states:
            lines.append(f"_carry_{s} = _final[{s!r}]  # dL/d{s}_T from beyond the sequence (dfinal, or zero)")
        for st in k.stores:
            p = st.product
            if st.shared:
                continue
            also = "".join(f" = dL/d({o.product.param} {o.product.operand})" for o in k.stores
                           if o.shared and o.array == st.array)
            lines.append(f"_{st.array} = {self.empty(f'(_T, _N, {stacked(p.count, p.rows)})', k.input)}  "
                         f"# dL/d({p.param} {p.operand}){also} for every t")
        whole = self._whole_bias_sums()
        for p in k.params:
            if not p.is_matrix and p.name not in whole:
                lines.append(f"_grad_{p.name} = {self.zeros(stacked(len(p.blocks), p.shape[0]), k.input)}")
        lines += self.bias_blocks(k.backward_reads)
        lines.append("for _t in range(_T - 1, -1, -1):")
        body = self.loads(k.backward_reads)
        for s, g in k.externals:
            direct = "_d_out[_t] + " if s == k.output else ""
            body.append(f"{g.name} = {direct}_carry_{s}  # dL/d{s}_t from outside the step")
        body += block_lines(k.backward, printer=self.elementwise())
        for st in (st for st in k.stores if not st.shared):
            for sym, i in st.blocks:
                body.append(f"_{st.array}[_t{self.columns(st.product.count, i, st.product.rows)}] = {sym.name}")
        for b in k.bias_grads:
            if b.store is None:
                body.append(f"_grad_{b.param}[{span(b.index, b.size) if self._count(b.param) > 1 else '...'}] += "
                            f"{b.adjoint.name}.sum(axis=0)")
        for c in k.carries:
            terms = ([c.direct.name] if c.direct is not None else []) + \
                    [self.matmul(m) for m in c.products]
            value = " + ".join(terms) if terms else self.zeros_like(f"_carry_{c.state}")
            body.append(f"_carry_{c.state} = {value}  # dL/d{c.state}_(t-1)")
        lines += ["    " + b for b in body]
        prevs = []
        for param, m in k.weight_grads:
            state = m.right[:-len("_prev")] if m.right.endswith("_prev") and m.right[:-5] in self.states else None
            if state and state not in prevs:
                prevs.append(state)
                lines.append(f"_{state}_prev = {self.concatenate(f'{state}0[None], _{state}_seq[:-1]')}"
                             f"  # {state}_0..{state}_(T-1)")
            note = f"{state}_(t-1)^T" if state else f"{m.right}_t^T"
            lines.append(f"_grad_{param} = {self.matmul(m)}  # sum_t dL/dP_t {note}")
        for param, array in whole.items():
            lines.append(f"_grad_{param} = _{array}.sum(axis=(0, 1))  # every block at once: sum_t, n of dL/dP_t")
        for b in k.bias_grads:
            if b.store is not None and b.param not in whole:
                cols = self.columns(b.store.product.count, b.store_index, b.store.product.rows)
                lines.append(f"_grad_{b.param}[{span(b.index, b.size) if self._count(b.param) > 1 else '...'}] = "
                             f"_{b.store.array}{f'[:{cols}]' if cols else ''}.sum(axis=(0, 1))")
        if k.input_grad:
            terms = " + ".join(self.matmul(m) for m in k.input_grad)
            lines.append(f"_grad_{k.input} = ({terms}).reshape(_T, _N, {k.input_size})")
        else:
            lines.append(f"_grad_{k.input} = {self.zeros_like(k.input)}")
        grads = [f"_grad_{k.input}"] + [f"_carry_{s}" for s in self.states] + [f"_grad_{p.name}" for p in k.params]
        lines.append(f"return Grads({', '.join(grads)})")
        return lines

    def _offsets(self):
        """(start, end) of each state in the full state vector, as printed expressions."""
        offsets, at = [], "0"
        for s, n in self.k.states:
            offsets.append((at, str(n) if at == "0" else f"{at} + {n}"))
            at = offsets[-1][1]
        return [(f"{'' if a == '0' else a}:{b}", b) for a, b in offsets]

    def _weight(self, term):
        return f"{term.param}[{span(term.index, term.rows)}]" if self._count(term.param) > 1 else term.param

    def factors(self):
        """Body of ``_step_factors(cache, t)``: the scalar factors of every Jacobian block at step t."""
        k = self.k
        fields = set(k.jacobian_loads)  # what the lowering says the step reads: no other cache field is loaded
        lines = [f"{', '.join(self.args)} = cache[:{len(self.args)}]"]
        lines += [f"_{n}_seq = cache.{n}" for n in self.states + [s.name for s in k.saved] if n in fields]
        lines += [f"_{p.array} = cache.{p.array}" for p in self.hoisted_kept if p.array in fields]
        lines += self.sizes_from_cache(k.jacobian_sizes) + ["_t = t - 1"] + self.bias_blocks(k.jacobian_reads)
        lines += self.loads(k.jacobian_reads)
        lines += block_lines(k.jacobian_factors)
        names = [a.symbol.name for a in k.jacobian_factors]
        return lines + wrap_call("return (", names, tail=",)" if len(names) == 1 else ")")

    def _unpack_factors(self):
        names = [a.symbol.name for a in self.k.jacobian_factors]
        return ([f"{', '.join(self.args)} = cache[:{len(self.args)}]"] + self.sizes_from_cache()
                + wrap_call("(", names, tail=",) = _step_factors(cache, t)" if len(names) == 1
                            else ") = _step_factors(cache, t)"))

    def jacobian(self):
        """Body of ``jacobian(cache, t)``: every block of d(state_t)/d(state_(t-1)) filled from the factors."""
        k = self.k
        lines = self._unpack_factors()
        offsets = self._offsets()
        lines.append(f"_J = np.zeros((_N, {offsets[-1][1]}, {offsets[-1][1]}), dtype={k.input}.dtype)")
        for b in k.jacobian:
            rows, cols = offsets[b.row][0], offsets[b.col][0]
            row_state, col_state = self.states[b.row], self.states[b.col]
            for term in b.terms:
                if term.param is None:
                    value = f"diagonal_block({term.factor.name}, _N, {self.size[row_state]}, _J.dtype)"
                    note = f"diag(d{row_state}_t/d{col_state}_(t-1) directly)"
                else:
                    value = f"matrix_block({term.factor.name}, _N, {self._weight(term)})"
                    note = f"diag(...) {self._weight(term)}"
                lines.append(f"_J[:, {rows}, {cols}] += {value}  # {note}")
        lines.append("return _J")
        return lines

    def _join_states(self):
        if len(self.states) == 1:
            return f"return _out_{self.states[0]}"
        return f"return np.concatenate(({', '.join(f'_out_{s}' for s in self.states)}), axis=1)"

    def _split(self, vector):
        return [f"_{vector}_{s} = {vector}[:, {rows}]" for s, (rows, _) in zip(self.states, self._offsets())]

    def jvp(self):
        """Body of ``_jvp(cache, t, v)``: (d(state_t)/d(state_(t-1))) v without forming the matrix."""
        k = self.k
        lines = self._unpack_factors() + self._split("v")
        for r, row in enumerate(self.states):
            terms = []
            for b in (b for b in k.jacobian if b.row == r):
                col = self.states[b.col]
                for term in b.terms:
                    terms.append(f"{term.factor.name} * _v_{col}" if term.param is None else
                                 f"{term.factor.name} * (_v_{col} @ {self._weight(term)}.T)")
            lines += wrap_sum(f"_out_{row} = (", terms) if terms else [f"_out_{row} = np.zeros_like(_v_{row})"]
        lines.append(self._join_states())
        return lines

    def vjp(self):
        """Body of ``_vjp(cache, t, u)``: u^T (d(state_t)/d(state_(t-1))) without forming the matrix."""
        k = self.k
        lines = self._unpack_factors() + self._split("u")
        for c, col in enumerate(self.states):
            terms = []
            for b in (b for b in k.jacobian if b.col == c):
                row = self.states[b.row]
                for term in b.terms:
                    terms.append(f"_u_{row} * {term.factor.name}" if term.param is None else
                                 f"(_u_{row} * {term.factor.name}) @ {self._weight(term)}")
            lines += wrap_sum(f"_out_{col} = (", terms) if terms else [f"_out_{col} = np.zeros_like(_u_{col})"]
        lines.append(self._join_states())
        return lines
