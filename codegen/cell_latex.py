r"""CellDerivation -> the template context of its LaTeX derivation (``templates/cell_derivation.tex.jinja``).

Every formula is printed from the same SymPy objects the kernels are lowered from (``derive.cell``): the equations,
the local partials, the Jacobian blocks, the adjoint assignments, the carries and the parameter gradients. Only the
names change, through the printer's ``symbol_names``: the stand-ins become the textbook's vectors

    W_ii_x -> W_{ii} x_t      h -> h_{t-1}      h_next -> h_t      i -> i_t      b_ii -> b_{ii}
    d_i -> \bar{i}_t (dL/di_t)      d_W_ii_x -> \overline{W_{ii} x_t}      d_h -> \tilde{h}_{t-1}
    g_h -> \epsilon^{h}_t (dL/dh_t from outside step t)

and a product of vectors prints with \odot, the entrywise product (the equations are elementwise except the
matrix products, ``derive.cellparse``).
"""
import sympy as sp

from codegen.latex_printer import DerivationLatexPrinter, decimal_rationals
from derive.cell import adjoint_symbol

_ESCAPE = {"\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$", "{": r"\{",
           "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text):
    """Plain text (a cell's description, a parameter's name) -> LaTeX that prints it as it is."""
    return "".join(_ESCAPE.get(ch, ch) for ch in text)


class CellLatexPrinter(DerivationLatexPrinter):
    r"""Products of vectors as entrywise products: i (1 - i) -> i_t \odot (1 - i_t); a number times a vector
    stays juxtaposed (2 x_t). Factors: symbols in ``factor_order`` ({symbol: rank}; the cell's: adjoints, then the
    step's values in the order they are computed, then the previous states, as f_t \odot c_{t-1}), then functions
    and powers, then sums."""

    _default_settings = {**DerivationLatexPrinter._default_settings, "factor_order": {}}

    def _as_ordered_terms(self, expr, order=None):
        # n_t - h_{t-1}, not SymPy's - h_{t-1} + n_t: positive terms first
        terms = super()._as_ordered_terms(expr, order)
        return [t for t in terms if not t.could_extract_minus_sign()] + [
            t for t in terms if t.could_extract_minus_sign()]

    def _print_Mul(self, expr):
        coeff, factors = expr.as_coeff_mul()
        if any(f.is_Pow and f.exp.is_negative for f in factors) or len(factors) < 2:
            return super()._print_Mul(expr)
        # symbols first, then functions and powers, then sums: i_t \odot o_t \odot (1 - i_t)
        order = self._settings["factor_order"]
        ordered = sorted(sp.Mul(*factors).as_ordered_factors(),
                         key=lambda f: (0 if f.is_Symbol else (2 if f.is_Add else 1), order.get(f, len(order))))
        parts = [rf"\left({self._print(f)}\right)" if f.is_Add else self._print(f) for f in ordered]
        body = r" \odot ".join(parts)
        if coeff == -1:
            return "- " + body
        if coeff != 1:
            return f"{self._print(coeff)} {body}"
        return body


def _vector(name, when):
    """An identifier as a vector at step ``when`` ('t', 't-1', or '' for a parameter block): i -> i_t,
    W_ii -> W_{ii}, cand -> \\mathit{cand}_t, z_r -> z_{r,t}."""
    base, _, sub = name.partition("_")
    head = base if len(base) == 1 else rf"\mathit{{{base}}}"
    subs = ",".join(s for s in (sub, when) if s)
    return f"{head}_{{{subs}}}" if subs else head


def _accent(accent, name, when):
    """i -> \\bar{i}_{t}: the accent on the letter, not on its subscript."""
    vector = _vector(name, when)
    head, _, sub = vector.partition("_")
    return rf"\{accent}{{{head}}}_{sub}" if sub else rf"\{accent}{{{head}}}"


class _Names:
    """The LaTeX name of every symbol of one derivation."""

    def __init__(self, d):
        cell = d.cell
        self.state = {s: _vector(s, "t") for s, _ in cell.states}
        self.prev = {s: _vector(s, "t-1") for s, _ in cell.states}
        self.prev[cell.input] = _vector(cell.input, "t")
        names = {}
        for s, _ in cell.states:
            names[cell.state_symbol(s)] = self.prev[s]
            names[cell.next_symbol(s)] = self.state[s]
            names[d.external[s]] = rf"\epsilon^{{{s}}}_{{t}}"
            names[adjoint_symbol(cell.next_symbol(s))] = _accent("bar", s, "t")
            names[adjoint_symbol(cell.state_symbol(s))] = _accent("tilde", s, "t-1")
        for e in cell.equations:
            if e.state is None:
                names[e.symbol] = _vector(e.target, "t")
                names[adjoint_symbol(e.symbol)] = _accent("bar", e.target, "t")
        for p in cell.products:
            product = rf"{_vector(p.block, '')} {self.prev[p.operand]}"
            names[p.symbol] = product
            names[adjoint_symbol(p.symbol)] = rf"\overline{{{product}}}"
        for b, _, _ in cell.biases:
            base, _, sub = b.partition("_")
            names[sp.Symbol(b, real=True)] = _vector(b, "")
            names[adjoint_symbol(sp.Symbol(b, real=True))] = rf"\bar{{{base}}}_{{{sub + ',' if sub else ''}t}}"
        self.symbols = names
        order = [d.external[s] for s, _ in cell.states]
        order += [adjoint_symbol(e.symbol) for e in cell.equations] + [e.symbol for e in cell.equations]
        order += [cell.state_symbol(s) for s, _ in cell.states] + [p.symbol for p in cell.products]
        self.order = {sym: k for k, sym in enumerate(order)}

    def printer(self):
        return CellLatexPrinter({"symbol_names": self.symbols, "factor_order": self.order})


# Typeset characters (``codegen.render._width``) per display line: an A4 line at 11pt holds about 80; the left
# side (a fraction or a chain of adjoints) and the indent take the rest. The pdflatex tests catch any overflow.
WIDTH = 52


def _chunks(terms, per_line):
    """Terms of a sum -> display lines of ``per_line`` terms each, every line after the first opening with '+'."""
    lines = [" + ".join(terms[k:k + per_line]) for k in range(0, len(terms), per_line)]
    return [lines[0]] + [f"+ {line}" for line in lines[1:]]


def _row(left, lines):
    """An align row ``left &= ...``: the first line beside the left side, the others indented under it."""
    return f"{left} &= {lines[0]}" + "".join(rf" \\ &\qquad {line}" for line in lines[1:])


def _diag(lines, after=""):
    r"""diag(...) around display lines: \left( \right) on one line, \bigl( \bigr) across several (a \left(
    cannot span lines)."""
    if len(lines) == 1:
        return [rf"\operatorname{{diag}}\left({lines[0]}\right){after}"]
    return ([rf"\operatorname{{diag}}\bigl({lines[0]}"] + lines[1:-1] + [rf"{lines[-1]}\bigr){after}"])


def _grad_rows(grads):
    """(block, right side) pairs -> align rows of two gradients each, with their punctuation."""
    cells = [rf"\frac{{\mathrm{{d}}L}}{{\mathrm{{d}}{left}}} &= {right}" for left, right in grads]
    rows = [", & ".join(cells[k:k + 2]) for k in range(0, len(cells), 2)]
    return [row + ("." if k == len(rows) - 1 else r", \\") for k, row in enumerate(rows)]


def _grouped(pairs):
    """[(left, right), ...] -> [([left, ...], right), ...]: the lefts with the same right side together, in order of
    first appearance."""
    out = []
    for left, right in pairs:
        for lefts, r in out:
            if r == right:
                lefts.append(left)
                break
        else:
            out.append(([left], right))
    return out


def _local_rows(d, tex, lines):
    """Per equation and group of arguments with the same partial: the row d target/du = diag(partial) for u = ...,
    arguments in the order SymPy lists them."""
    rows = []
    for e in d.cell.equations:
        pairs = [(tex(arg), part) for target, arg, part in d.local_partials if target == e.symbol]
        for args, part in _grouped(pairs):
            body = _diag(lines(part, WIDTH - 8))
            body[-1] += rf" \quad \text{{for }} u = {', '.join(args)}"
            rows.append(_row(rf"\frac{{\partial {tex(e.symbol)}}}{{\partial u}}", body))
    return rows


def _block_rows(d, names, lines):
    """Each nonzero block: its name, row and column, and its align row: diag(direct), then diag(factor_k) W_k."""
    out = []
    for b in d.jacobian:
        body = []
        if b.direct != 0:
            body += _diag(lines(b.direct, WIDTH - 8))
        for factor, p in b.terms:
            term = _diag(lines(factor, WIDTH - 12), " " + _vector(p.block, ""))
            body += [f"+ {term[0]}" if body else term[0]] + term[1:]
        name = f"J^{{{b.row}{b.col}}}_t"
        left = rf"{name} = \frac{{\partial {names.state[b.row]}}}{{\partial {names.prev[b.col]}}}"
        out.append(dict(name=name, row_name=b.row, col_name=b.col, row=_row(left, body)))
    return out


def _block_matrix(d, blocks):
    states = [s for s, _ in d.cell.states]
    have = {(b["row_name"], b["col_name"]): b["name"] for b in blocks}
    rows = [" & ".join(have.get((r, c), "0") for c in states) for r in states]
    return r"\begin{pmatrix} " + r" \\ ".join(rows) + r" \end{pmatrix}"


def _free_paths(d, names, tex):
    """The diagonal blocks with a direct term: (state, its factor) - a path from s_{t-1} to s_t that no weight
    matrix multiplies."""
    return [dict(state=b.row, now=names.state[b.row], prev=names.prev[b.row], factor=tex(b.direct),
                 only=not b.terms)
            for b in d.jacobian if b.row == b.col and b.direct != 0]


def cell_latex_context(d, header):
    """CellDerivation -> the context of ``cell_derivation.tex.jinja``: LaTeX strings printed from ``d``'s SymPy
    objects, with ``header`` (the generated-file comment)."""
    names = _Names(d)
    printer = names.printer()

    def tex(expr):
        return printer.doprint(decimal_rationals(expr))

    def lines(expr, width=WIDTH):
        """``expr`` as display lines of at most ``width`` typeset characters, broken at its top-level + and -."""
        from codegen.render import _lines  # render imports this module; the width rule is render's
        expr = decimal_rationals(expr)
        if not isinstance(expr, sp.Add):
            return [tex(expr)]
        terms = []
        for k, term in enumerate(printer._as_ordered_terms(expr)):
            negative = term.could_extract_minus_sign()
            terms.append(("- " if negative else ("+ " if k else "")) + tex(-term if negative else term))
        return _lines(terms, width)

    cell = d.cell
    params = []
    for p in cell.params:
        blocks = [_vector(b, "") for b in p.blocks]
        rows = f"{len(blocks)}{p.shape[0]}" if len(blocks) > 1 else f"{p.shape[0]}"
        shape = rf"{rows} \times {p.shape[1]}" if p.is_matrix else rows
        stacked = (r"\begin{pmatrix} " + r" \\ ".join(blocks) + r" \end{pmatrix}") if len(blocks) > 1 else blocks[0]
        params.append(dict(name=escape(p.name), stacked=stacked, shape=shape, blocks=blocks))

    # the step's own adjoints (intermediates and new states) one per row; the leaves' grouped by their value
    leaf_syms = set(d.leaf_adjoints.values())
    node_adjoints = [_row(tex(a.symbol), lines(a.expr)) for a in d.adjoints if a.symbol not in leaf_syms]
    leaf_adjoints = [_row(" = ".join(lefts), list(right)) for lefts, right in
                     _grouped([(tex(a.symbol), tuple(lines(a.expr, WIDTH - 16))) for a in d.adjoints
                               if a.symbol in leaf_syms])]
    adjoint_rows = node_adjoints + leaf_adjoints

    carries = []
    for c in d.carries:
        terms = [tex(c.direct)] if c.direct is not None else []
        terms += [rf"{_vector(p.block, '')}^{{\top}} {tex(adjoint_symbol(p.symbol))}" for p in c.products]
        carry = _chunks([rf"\frac{{\partial L}}{{\partial {names.prev[c.state]}}}"] + terms, 3)
        carries.append(dict(state=c.state, prev=names.prev[c.state], lines=carry,
                            direct=tex(c.direct) if c.direct is not None else None))
    grads = []
    for g in d.param_grads:
        left = _vector(g.block, "")
        if g.operand is None:
            grads.append((left, rf"\sum_{{t=1}}^{{T}} {tex(g.adjoint)}"))
        else:
            grads.append((left, rf"\sum_{{t=1}}^{{T}} {tex(g.adjoint)} {names.prev[g.operand]}^{{\top}}"))
    grad_x = _chunks([rf"{_vector(p.block, '')}^{{\top}} {tex(adjoint_symbol(p.symbol))}"
                      for p in d.input_products], 2)
    stacks = [rf"\texttt{{{p['name']}}}: " + ", ".join(f"${b}$" for b in p["blocks"])  # breakable at commas
              for p in params if len(p["blocks"]) > 1]
    stacks = f"({'; '.join(stacks)})" if stacks else ""
    blocks = _block_rows(d, names, lines)
    return dict(
        header=header, name_tex=escape(cell.name), description=escape(cell.description),
        input=names.prev[cell.input], input_size=str(cell.input_size),
        states=[dict(now=names.state[s], size=str(n)) for s, n in cell.states],
        output=names.state[cell.output], params=params,
        equations=[_row(tex(e.symbol), lines(e.expr)) for e in cell.equations],
        locals=_local_rows(d, tex, lines), blocks=blocks,
        block_matrix=_block_matrix(d, blocks), several_states=len(cell.states) > 1,
        state_vector=(r"\begin{pmatrix} " + r" \\ ".join(names.state[s] for s, _ in cell.states)
                      + r" \end{pmatrix}"),
        free_paths=_free_paths(d, names, tex),
        stacks=stacks, initials=", ".join(
            rf"$\mathrm{{d}}L / \mathrm{{d}}{_vector(s, '0')}$" for s, _ in cell.states),
        grad_rows=_grad_rows(grads),
        adjoints=adjoint_rows, carries=carries, grad_x=grad_x,
    )

