"""CellDerivation -> the text of generated/cell_<name>.py: lowering, printing, and the Jinja template.

    # [CellDerivation] -> [CellKernel]      codegen.lower.lower
    # [CellKernel] -> {section: [line]}     codegen.cell_printer.NumpyCellPrinter
    # {section: [line]} -> text             codegen/templates/cell_module.py.jinja
"""
import sympy as sp

from codegen.cell_printer import NumpyCellPrinter
from codegen.lower import lower
from codegen.text_printer import text
from derive.functions import sigmoid


def _terms(block):
    """One Jacobian block as lines: the first names it, each further term on its own line."""
    parts = [f"diag({text(block.direct)})"] if block.direct != 0 else []
    parts += [f"diag({text(f)}) {q.block}" for f, q in block.terms]
    head = f"d{block.row}_t/d{block.col}_(t-1) = "
    return [head + parts[0]] + [" " * (len(head) - 2) + "+ " + p for p in parts[1:]]


def cell_context(d, header, source_path):
    """The template context of one cell's module."""
    kernel = lower(d)
    printer = NumpyCellPrinter(kernel)
    cell = d.cell
    states = [s for s, _ in cell.states]
    exprs = [a.expr for a in kernel.forward + kernel.backward + kernel.jacobian_factors]
    helpers = [name for name, fn in (("erf", sp.erf), ("sigmoid", sigmoid)) if any(e.has(fn) for e in exprs)]
    shapes = printer.shapes()
    size = dict(cell.states)
    carry = []
    for c in d.carries:
        terms = [f"{q.block}^T d_{q.symbol.name}" for q in c.products] + ([c.direct.name] if c.direct else [])
        carry.append(f"dL/d{c.state}_(t-1) = " + (" + ".join(terms) or "0"))
    grads = []
    for g in d.param_grads:
        term = f"d_{g.adjoint.name[2:]} {g.operand}^T" if g.operand else f"d_{g.adjoint.name[2:]}"
        grads.append(f"d{g.param}[{g.block}] = sum_t {term}")
    grads += [f"d{cell.input}_t = " + " + ".join(f"{q.block}^T d_{q.symbol.name}" for q in d.input_products)]
    return dict(
        header=header, name=cell.name, source_path=source_path,
        description=_wrap(cell.description), input=cell.input, input_size=str(cell.input_size),
        states=states, output=cell.output, output_size=str(size[cell.output]),
        args=printer.args, step_args=[f"{cell.input}_t"] + [f"{s}_prev" for s in states] +
        [p.name for p in cell.params], shapes=list(shapes.items()),
        shapes_lines=_wrap(", ".join(f"{a} ({', '.join(labels)}{',' if len(labels) == 1 else ''})"
                                     for a, labels in shapes.items()), 112),
        equations=[e.text for e in cell.equations],
        jacobian_text=[line for b in d.jacobian for line in _terms(b)],
        adjoint_text=[f"{a.symbol.name} = {text(a.expr)}" for a in d.adjoints],
        carry_text=carry, grad_text=grads,
        cache_fields=printer.cache_fields, grads_fields=printer.grads_fields(),
        saved_text=", ".join(s.name for s in kernel.saved) or "nothing else",
        support_imports=helpers, recurrent_weight=_recurrent_weight(shapes, size), **printer.sections(),
    )


def _recurrent_weight(shapes, state_sizes):
    """The parameter that multiplies a state in every step (the first 2-D one whose columns are a state's size;
    else the first 2-D parameter): the BLAS thread policy sizes the kernel's products by it."""
    weights = [a for a, labels in shapes.items() if len(labels) == 2 and labels[0] != "N"]
    sizes = {str(s) for s in state_sizes.values()}
    return next((a for a in weights if shapes[a][1] in sizes), weights[0])


def _wrap(words, width=116):
    lines, current = [], ""
    for w in words.split():
        if current and len(current) + 1 + len(w) > width:
            lines.append(current)
            current = w
        else:
            current = f"{current} {w}".strip()
    return lines + ([current] if current else [])
