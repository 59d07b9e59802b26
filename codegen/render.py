"""Derivations -> the text of every file under generated/ (Jinja2).

``render(derivations)`` returns {relative path: text} and writes nothing; ``codegen.write.write_tree`` writes it.
"""
import ast
import functools
import hashlib
import io
import re
import tokenize
from pathlib import Path

import jinja2
import sympy as sp

from codegen.cell_latex import cell_latex_context
from codegen.cell_render import cell_context
from codegen.latex_passes import (Phi, closed_form_sup, definitions as normal_definitions, long_constants,
                                  name_parameters, phi, textbook)
from codegen.latex_printer import latex, latex_terms
from codegen.numpy_printer import scalar_support, support_names
from codegen.rnn_lower import lower_rnn
from codegen.rnn_printer import RnnPrinter
from codegen.support_fits import FAR, K, NEAR, erfc_fits
from codegen.text_printer import text
from codegen.write import write_tree  # noqa: F401  (its old home: interop and older callers import it from here)
from derive.catalogue import check_name
from derive.elementwise import H as h_symbol
from derive.parse import X as x_symbol
from derive.recurrence import W, delta_t

TEMPLATES = Path(__file__).with_name("templates")
MATRIX_FIELDS = ("pre_activation", "output", "dh_dE", "dE_dh_prev", "jacobian", "dL_dh", "delta",
                 "grad_V", "grad_W", "grad_b", "grad_x", "grad_h_prev")

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    autoescape=False,
)
ENV.filters["pyrepr"] = repr  # Python literals in Python files: 'x > 0', not JSON's "x \u003e 0"
# LaTeX is full of braces: its templates use ((( ))) for values, ((* *)) for statements, ((# #)) for comments.
LATEX_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    autoescape=False, block_start_string="((*", block_end_string="*))", variable_start_string="(((",
    variable_end_string=")))", comment_start_string="((#", comment_end_string="#))",
)
NUMBA_MAX_WORK = 8192  # N*H*H; measured crossover of the compiled and NumPy loops (see README, Performance)
# N*H*H up to which the compiled loop calling BLAS for each step's product runs: where OpenBLAS computes such a
# product on one thread by its own rule (M*N*K <= 4 * 65536, GEMM_MULTITHREAD_THRESHOLD), so that SciPy's BLAS, a
# second OpenBLAS beside NumPy's, never wakes its threads. Above it the two libraries' thread pools took turns on
# the 2 cores and spun against each other: leaky_relu at (100, 32, 128) float32 ran 9x slower in `python -m bench`
# (forward 7.0 / backward 9.1 ms against NumPy's 4.6 / 5.7 in one process; with OPENBLAS_NUM_THREADS=1 2.6 / 4.2
# against 3.1 / 4.4). Below it, forward (relu) and backward alone, NumPy loop / compiled, ms, one thread:
# (100, 16, 64) float32 0.40 / 0.13 and 0.36 / 0.15, float64 0.57 / 0.28 and 0.52 / 0.29
NUMBA_BLAS_MAX_WORK = 2**18
JACOBIAN_MAX_BYTES = "2**30"  # 1 GiB: the default limit of jacobian_products
WIDE = 62  # characters of typeset math past which an expression is referred to, not written out in a display


# What FORMAT guarantees: a module that records this installation's FORMAT runs with this installation's support
# modules (generated/_support.py, _cell_support.py) and has the functions and constants its front ends call; a
# user module in the per-user data folder that records another (an older install generated it) is refused by
# generated.load before any of its code runs. It is the digest of
# - the code of the support modules (rendered, without comments and docstrings): every name a module imports from
#   them, and what each does, is there. The printers (numpy_printer, rnn_printer, cell_printer, passes) decide which
#   of those names a module uses, but an older module's text is fixed: it fails here only if a name it imports was
#   removed or changed, and that changes this code. So printer edits (new numerics, a new name used) leave FORMAT
#   alone and need not rewrite every committed module;
# - the module templates without their comment lines: the functions and constants a module has, its imports.
# Comments and docstrings are left out so that editing them does not change FORMAT (and every module with it).
FORMAT_SUPPORT = ("cell_support.py.jinja", "support.py.jinja")
FORMAT_MODULES = ("cell_module.py.jinja", "rnn_module.py.jinja")
FORMAT_TEMPLATES = tuple(sorted(FORMAT_SUPPORT + FORMAT_MODULES))
# the package above codegen: none in the checkout, rnn_bptt_derive when installed
_PARENT = __package__.rpartition(".")[0]


def format_fingerprint(templates=TEMPLATES, parent=_PARENT):
    """SHA-256 (hex) of FORMAT_TEMPLATES in the folder ``templates`` (see above for what of them): the same in the
    checkout and in an installed copy, whose build prefixes the templates' import lines with ``parent`` (undone
    here before hashing), and under every Python version this package supports."""
    digest = hashlib.sha256()
    for name in FORMAT_TEMPLATES:
        text = (Path(templates) / name).read_text(encoding="utf-8")
        if parent:
            text = re.sub(rf"^([ \t]*from[ \t]+){re.escape(parent)}\.", r"\1", text, flags=re.M)
        text = _support_code(text) if name in FORMAT_SUPPORT else _template_code(text)
        digest.update(f"{name} {len(text)}\n{text}".encode("utf-8"))
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _support_code(template):
    """The support module that ``template`` renders, as its code alone: comments and docstrings removed (found by
    tokenize and ast, which agree on them in every Python version), then trailing spaces and blank lines."""
    source = ENV.from_string(template).render(header="", erfc=_erfc_context())
    lines = source.splitlines(keepends=True)
    spans = []  # (row, first char, row, char after), 1-based rows
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            spans.append((*token.start, *token.end))

    def char(row, byte):  # ast counts columns in UTF-8 bytes, tokenize in characters
        return len(lines[row - 1].encode("utf-8")[:byte].decode("utf-8"))

    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                spans.append((first.lineno, char(first.lineno, first.col_offset),
                              first.end_lineno, char(first.end_lineno, first.end_col_offset)))
    for row, col, end_row, end_col in sorted(spans, reverse=True):  # from the end: earlier spans keep their place
        lines[row - 1:end_row] = [lines[row - 1][:col] + lines[end_row - 1][end_col:]]
    return "".join(line.rstrip() + "\n" for line in "".join(lines).splitlines() if line.strip())


def _template_code(template):
    """A module template without its Jinja comments, comment lines, docstrings (a line opening with three quotes
    after ``{{ header }}`` or a line ending in ':'), trailing spaces and blank lines. A template is not Python:
    a comment after code on its line stays."""
    kept, in_docstring, previous = [], False, ""
    for line in re.sub(r"\{#.*?#\}", "", template, flags=re.S).splitlines():
        stripped = line.strip()
        if in_docstring:
            in_docstring = '"""' not in stripped
        elif stripped.startswith('"""') and (previous.endswith(":") or previous == "{{ header }}"):
            in_docstring = '"""' not in stripped[3:]
        elif stripped and not stripped.startswith("#"):
            kept.append(line.rstrip() + "\n")
        if stripped:
            previous = stripped
    return "".join(kept)


def header(template, comment="#"):
    return (f"{comment} Generated by `python -m codegen` (make derive) from codegen/templates/{template}.\n"
            f"{comment} Do not edit: change the derivation or the template and run `make derive`.")


def module_context(d):
    """The template context of one derivation: text printed from its SymPy objects.

        # [Derivation] -> [RnnKernel]           codegen.rnn_lower.lower_rnn
        # [RnnKernel] -> {section: [line]}      codegen.rnn_printer.RnnPrinter
        # {section: [line]} -> text             codegen/templates/rnn_module.py.jinja
    """
    s = d.scalar
    code = RnnPrinter(lower_rnn(d)).sections()
    df_expr, df_arg = (s.df_h, "h") if d.uses_output else (s.df, "E")
    scalar_imports, scalar_math = scalar_support(*([s.f, s.df] if code["activation_pair_scalar"] else [s.f, s.df_h]))
    names = {s.f: "f", s.df: "f'"}  # each formula is written out once, in the module docstring
    if s.gamma is None:
        gamma_value, gamma_note, gamma_text = "None", ": not found", "not found"
    elif s.gamma == sp.oo:
        gamma_value, gamma_note, gamma_text = 'float("inf")', ": unbounded", "unbounded"
    else:
        gamma_value = repr(float(s.gamma))
        gamma_note = " (exact)" if s.gamma_exact else " (numeric, to 15 digits)"
        gamma_text = text(s.gamma) if s.gamma_exact and s.gamma.is_Rational else gamma_value
    return dict(
        header=header("rnn_module.py.jinja"), name=d.name, format=format_fingerprint(),
        f_text=text(s.f), df_text=text(s.df),
        df_h_text=text(s.df_h) if d.uses_output else None, uses_output=d.uses_output,
        kinks=[repr(float(k)) for k in s.kinks], gamma_value=gamma_value, gamma_note=gamma_note, gamma_text=gamma_text,
        eq={k: text(getattr(d, k), names) for k in MATRIX_FIELDS}, grad_h0=text(_at_first_step(d.grad_h_prev)),
        df_arg=df_arg,
        support_imports="".join(f", {h}" for h in support_names(s.f, df_expr)),
        code=code, numba_max_work=NUMBA_MAX_WORK, numba_blas_max_work=NUMBA_BLAS_MAX_WORK,
        jacobian_max_bytes=JACOBIAN_MAX_BYTES,
        scalar_imports=", ".join(scalar_imports), scalar_math=scalar_math,
    )


def _erfc_context():
    """The support template's erfc: the fits (codegen.support_fits) and their limits as literals."""
    return dict(erfc_fits(), near_limit=repr(NEAR), far_limit=repr(FAR), k=repr(K))


def render_cells(cells):
    """{path: text} of the cell modules and their support module (nothing when there are no cells)."""
    if not cells:
        return {}
    files = {"_cell_support.py": ENV.get_template("cell_support.py.jinja").render(
        header=header("cell_support.py.jinja"))}
    module = ENV.get_template("cell_module.py.jinja")
    for c in cells:
        files[f"cell_{c.name}.py"] = module.render(format=format_fingerprint(), **cell_context(
            c, header("cell_module.py.jinja"), f"{c.name}.cell"))
    return files


ONE_GLYPH = {"sigma", "delta", "gamma", "pi", "alpha", "lambda", "top", "cdot", "infty", "approx", "le", "Phi",
             "varphi"}


def _width(tex):
    """Roughly how many characters ``tex`` takes once typeset (sizing commands and braces do not count)."""
    cases = re.search(r"\\begin\{cases\}(.*?)\\end\{cases\}", tex)
    if cases:  # as wide as its widest row
        rows = cases.group(1).replace(r"\text{for}", "").split(r"\\")
        return _width(tex[:cases.start()] + tex[cases.end():]) + 2 + max(_width(r) for r in rows)
    frac = tex.find(r"\frac{")
    if frac >= 0:  # as wide as the wider of its numerator and denominator
        numerator, end = _group(tex, frac + len(r"\frac"))
        denominator, end = _group(tex, end)
        wider = max(numerator, denominator, key=_width)
        return _width(tex[:frac] + "{" + wider + "}" + tex[end:])
    stripped = re.sub(r"\\(left|right|operatorname|mathrm|text)\b|\\[:,;!]", "", tex)
    stripped = re.sub(r"\\([a-zA-Z]+)", lambda m: "x" if m.group(1) in ONE_GLYPH else m.group(1), stripped)
    return len(re.sub(r"[{}^_ ]", "", stripped))


def _group(tex, start):
    """The text inside the brace group that opens at ``tex[start]``, and the index just past its closing brace."""
    depth = 0
    for i in range(start, len(tex)):
        depth += {"{": 1, "}": -1}.get(tex[i], 0)
        if depth == 0:
            return tex[start + 1:i], i + 1
    raise ValueError(f"unbalanced braces in {tex!r}")


def _lines(terms, width=WIDE):
    """Group the signed terms of a sum into display lines of at most ``width`` typeset characters."""
    lines, current = [], ""
    for term in terms:
        if current and _width(current + term) > width:
            lines.append(current)
            current = term
        else:
            current = f"{current} {term}".strip()
    return lines + [current]


def _short(tex):
    return tex if _width(tex) <= WIDE else ""


def _at_first_step(expr):
    """A per-step gradient at t = 1 (dh_0 = W^T delta_1)."""
    return expr.subs(delta_t, sp.MatrixSymbol("delta_1", *delta_t.shape))


def _cell(expr, width, **settings):
    """A table cell for ``expr`` at most ``width`` typeset characters wide: one $...$ per line, the lines broken at
    the top-level + and - signs (LaTeX breaks a paragraph cell between them); '' when a term alone is too wide or it
    takes more than three lines."""
    lines = _lines(latex_terms(expr, **settings), width)
    if len(lines) > 3 or any(_width(line) > width for line in lines):
        return ""
    return " ".join(f"${line}$" for line in lines)


# The table's columns in the combined document: widths in cm, and how many typeset characters (``_width``) are
# allowed in each: 5.5 a centimetre, a cautious estimate for \small math (the pdflatex test fails on any cell that
# still overflows its column).
TABLE_CM = {"name": 1.9, "f": 4.0, "df": 4.3, "df_h": 3.3, "gamma": 1.9}
CHARS_PER_CM = 5.5


def _fits(column):
    return int(TABLE_CM[column] * CHARS_PER_CM)


def _with_x(expr, name):
    """A scalar expression in x (or h) with its variable shown as the vector ``name`` (f'(x) -> f'(E_t))."""
    return expr.subs({x_symbol: sp.Symbol(name), h_symbol: sp.Symbol(name)})


def latex_generic(d):
    r"""The LaTeX context of the derivation every activation shares: the recurrence, the Jacobian, BPTT.

    Printed from ``d``'s matrix objects with f' left as a symbol (\operatorname{diag}(f'(E_t))), so any derivation
    gives the same text; and SymPy's Jacobian of an undefined f applied to a vector z = (z_1, z_2, z_3).
    """
    zs = sp.symbols("z_1:4", real=True)
    f = sp.Function("f")
    jac3 = sp.Matrix([f(z) for z in zs]).jacobian(zs).replace(
        sp.Derivative, lambda e, *v: sp.Symbol(f"f'({latex(e.args[0])})"))
    return dict(
        jacobian3=latex(jac3), pre_activation=latex(d.pre_activation),
        dh_dE=latex(d.dh_dE, fprime_symbol=True), dE_dh_prev=latex(d.dE_dh_prev),
        jacobian=latex(d.jacobian, fprime_symbol=True), dL_dh=latex(d.dL_dh), delta=latex(d.delta, fprime_symbol=True),
        grad_V=latex(d.grad_V), grad_W=latex(d.grad_W), grad_b=latex(d.grad_b), grad_x=latex(d.grad_x),
        grad_h0=latex(_at_first_step(d.grad_h_prev)),
    )


def _exact_decimal(value):
    """A rational whose decimal expansion ends (denominator 2^a 5^b), written out in full; None for any other."""
    a = b = 0
    q = value.q
    while q % 2 == 0:
        q, a = q // 2, a + 1
    while q % 5 == 0:
        q, b = q // 5, b + 1
    if q != 1:
        return None
    places = max(a, b)
    digits = str(abs(value.p) * 10**places // value.q).rjust(places + 1, "0")
    whole, fraction = digits[:len(digits) - places], digits[len(digits) - places:].rstrip("0")
    return ("-" if value < 0 else "") + whole + ("." + fraction if fraction else "")


def _gamma(d, named, df_form, **settings):
    """(sentence part after 'gamma = sup |f'(x)|', table cell) for gamma: '=' only for exact values."""
    s = d.scalar
    if s.gamma is None:
        return r"\text{, which SymPy did not find}", r"\text{not found}"
    if s.gamma == sp.oo:
        return r" = \infty\text{ (}f'\text{ is unbounded)}", r"\infty"
    value = rf"{float(s.gamma):.10g}"
    if s.gamma_exact:
        form = name_parameters(s.gamma, named)
        if s.gamma.is_Rational and s.gamma.q <= 1000:
            return f" = {latex(s.gamma)}", latex(s.gamma)
        if form.is_Rational:  # a long rational unnamed: '=' only for its full decimal, else printed to 10 digits
            exact = _exact_decimal(form)
            if exact is None or len(exact) > 24:
                return rf" \approx {value}", rf"\approx {float(s.gamma):.4f}"
            return f" = {exact}", rf"\approx {float(s.gamma):.4f}"
        tex = latex(form, **settings)
        return rf" = {tex} \approx {value}", rf"{tex} \approx {float(s.gamma):.4g}"
    found = closed_form_sup(s.df, x_symbol, s.gamma)
    if found is None:
        return rf" \approx {value}\text{{ (numerically)}}", rf"\approx {float(s.gamma):.4f}"
    exact, point = found
    if point.is_finite:
        chain = rf" = f'\left({latex(point)}\right) = {latex(df_form.subs(x_symbol, point), **settings)}"
    else:  # approached, not attained
        chain = rf" = \lim_{{x \to {latex(point)}}} |f'(x)|"
    return rf"{chain} = {latex(exact)} \approx {value}", rf"\approx {float(s.gamma):.4f}"


def _step(f_form, df_form, df_h_form, **settings):
    """The aligned lines 'h_t &= ...', 'dh_t/dE_t &= ...' of one step with this activation, those short enough to
    write out; a constant f' = c gives J_t = c W instead (the identity's Jacobian is W)."""
    lines = []
    output = _short(latex(_with_x(f_form, "E_t"), **settings))
    if output and output != "E_{t}":
        lines.append(rf"h_t &= {output}")
    if x_symbol not in df_form.free_symbols:
        return lines + [rf"J_t &= {latex(df_form * W, **settings)}"]
    lhs = r"\frac{\partial h_t}{\partial E_t} "
    dh_dE = _short(rf"\operatorname{{diag}}\left({latex(_with_x(df_form, 'E_t'), **settings)}\right)")
    if dh_dE:
        lines.append(rf"{lhs}&= {dh_dE}")
    if df_h_form is not None and _short(latex(_with_x(df_h_form, "h_t"), **settings)):
        dh_dE_h = rf"\operatorname{{diag}}\left({latex(_with_x(df_h_form, 'h_t'), **settings)}\right)"
        lines.append(("" if dh_dE else lhs) + rf"&= {dh_dE_h} \quad\text{{(from the output)}}")
    return lines


def latex_context(d):
    """The LaTeX template context of one activation: its f, f' and gamma in textbook form (each proved equal by
    SymPy to the derived expression, see codegen.latex_passes), and its table row."""
    s, a = d.scalar, d.activation
    named = long_constants(a.params)
    given = {p: v for p, v in a.params.items() if p not in named}
    # named constants in products in the order the catalogue entry writes them: SELU's lambda alpha
    order = dict(named_order=tuple(dict.fromkeys(
        str(e) for e in sp.preorder_traversal(a.expr) if e in named)))
    f_form = textbook(s.f, named, candidates=(a.expr.subs(given),))
    df_form = textbook(s.df, named)
    df_h_form = textbook(s.df_h, named) if d.uses_output else None
    used = [e for e in (f_form, df_form, df_h_form) if e is not None]
    definitions = [rf"{latex(p)} = {_exact_decimal(named[p]) or latex(named[p])}"
                   for p in sorted(named, key=lambda p: order["named_order"].index(str(p)))]
    u = sp.Symbol("u", real=True)
    forms = normal_definitions(u)
    if any(e.has(Phi) for e in used):
        definitions.append(rf"\Phi(u) = {latex(forms[Phi])}")
        if any(e.has(phi) for e in used):
            definitions.append(rf"\varphi(u) = \Phi'(u) = {latex(forms[phi])}")
    gamma, gamma_cell = _gamma(d, named, df_form, **order)
    df_h_tex = latex(df_h_form, **order) if d.uses_output else ""
    name_tex = d.name.replace("_", r"\_")
    see = rf"see \S\ref{{sec:{d.name}}}"  # a cell too long to fit its column refers to the section
    return dict(
        name=d.name, name_tex=name_tex, f=latex(f_form, **order), df_lines=_lines(latex_terms(df_form, **order)),
        df_h=df_h_tex,
        definitions=definitions, kinks=[latex(k) for k in s.kinks], gamma=gamma, gamma_display=_width(gamma) > 40,
        step=_step(f_form, df_form, df_h_form if d.uses_output and s.df_h != s.df else None, **order),
        f_cell=_cell(f_form, _fits("f"), **order) or see, df_cell=_cell(df_form, _fits("df"), **order) or see,
        df_h_cell=(_cell(df_h_form, _fits("df_h"), **order) or see) if d.uses_output else r"none: keeps $E_t$",
        gamma_cell=gamma_cell,
    )


def render(derivations, cells=()):
    """{path relative to generated/: text} for every generated file; ``cells`` are CellDerivations.

    Each name becomes a file name and is written into Python source, so it is checked here too (``check_name``:
    a lowercase identifier), not only where the command line reads it; two derivations may not share a name.
    """
    seen = set()
    for d in derivations:
        check_name(d.name, seen)
        seen.add(d.name)
    files = {
        "__init__.py": ENV.get_template("init.py.jinja").render(
            header=header("init.py.jinja"), names=[d.name for d in derivations], cells=[c.name for c in cells],
            format=format_fingerprint()),
        "_support.py": ENV.get_template("support.py.jinja").render(header=header("support.py.jinja"),
                                                                    erfc=_erfc_context()),
    }
    files.update(render_cells(cells))
    module = ENV.get_template("rnn_module.py.jinja")
    single = LATEX_ENV.get_template("derivation.tex.jinja")
    contexts = []
    generic = latex_generic(derivations[0]) if derivations else None
    for d in derivations:
        files[f"rnn_{d.name}.py"] = module.render(**module_context(d))
        contexts.append(latex_context(d))
        files[f"latex/rnn_{d.name}.tex"] = single.render(
            header=header("derivation.tex.jinja", "%"), g=generic, a=contexts[-1])
    cell_tex = LATEX_ENV.get_template("cell_derivation.tex.jinja")
    for c in cells:
        files[f"latex/cell_{c.name}.tex"] = cell_tex.render(
            c=cell_latex_context(c, header("cell_derivation.tex.jinja", "%")))
    files["latex/all_activations.tex"] = LATEX_ENV.get_template("all_activations.tex.jinja").render(
        header=header("all_activations.tex.jinja", "%"), g=generic, activations=contexts, columns=TABLE_CM)
    return files
