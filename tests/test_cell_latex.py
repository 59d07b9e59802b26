"""The cells' LaTeX derivations: printer rules (exact strings), what the documents say (the textbook results for the
LSTM and GRU), and user cells (a derivation written with the module, removed with it, compiled by pdflatex)."""
import re
import shutil
import subprocess

import pytest
import sympy as sp

from codegen.__main__ import _add_cell, _remove_cell
from codegen.build import GENERATED
from codegen.cell_latex import CellLatexPrinter, _vector, escape
from derive.cell import read_cells

LATEX = GENERATED / "latex"


def tex_of(name):
    return (LATEX / f"cell_{name}.tex").read_text()


# --- printer rules ---------------------------------------------------------------------------------------------------

def test_vector_names_follow_the_textbook():
    assert _vector("i", "t") == "i_{t}" and _vector("h", "t-1") == "h_{t-1}"
    assert _vector("W_ii", "") == "W_{ii}" and _vector("cand", "t") == r"\mathit{cand}_{t}"
    assert _vector("z_r", "t") == "z_{r,t}"


def test_products_of_vectors_print_as_entrywise_products_in_the_given_order():
    f, c, i, g = sp.symbols("f c i g", real=True)
    names = {f: "f_{t}", c: "c_{t-1}", i: "i_{t}", g: "g_{t}"}
    printer = CellLatexPrinter({"symbol_names": names, "factor_order": {f: 0, i: 1, g: 2, c: 3}})
    assert printer.doprint(f * c + i * g) == r"f_{t} \odot c_{t-1} + i_{t} \odot g_{t}"
    assert printer.doprint(i * (1 - i)) == r"i_{t} \odot \left(1 - i_{t}\right)"
    assert printer.doprint(-f * c) == r"- f_{t} \odot c_{t-1}"
    assert printer.doprint(2 * f * c) == r"2 f_{t} \odot c_{t-1}"
    assert printer.doprint(f * (i - c)) == r"f_{t} \odot \left(i_{t} - c_{t-1}\right)"  # positive terms first


def test_escape_prints_plain_text_as_it_is():
    assert escape("weight_ih 50% #1 {a} $x ~^\\") == (
        r"weight\_ih 50\% \#1 \{a\} \$x \textasciitilde{}\textasciicircum{}\textbackslash{}")


# --- the documents ---------------------------------------------------------------------------------------------------

def test_every_cell_has_a_derivation():
    assert sorted(p.stem for p in LATEX.glob("cell_*.tex")) == sorted(f"cell_{c.name}" for c in read_cells())


@pytest.mark.parametrize("name", [c.name for c in read_cells()])
def test_cell_documents_print_no_raw_sympy(name):
    tex = tex_of(name)
    for raw in ("Derivative(", "Dummy", "_next", " d_", "{d_", "g_h", "sigmoid", "W_ii_x", "**", "None"):
        assert raw not in tex, raw
    assert "numerator layout" in tex and r"\epsilon^{h}_{t-1}" in tex


def test_lstm_document_has_the_textbook_equations_blocks_and_adjoints():
    tex = tex_of("lstm")
    assert r"c_{t} &= f_{t} \odot c_{t-1} + i_{t} \odot g_{t}" in tex
    assert r"h_{t} &= o_{t} \odot \tanh{\left(c_{t} \right)}" in tex
    assert r"J_t = \frac{\partial s_t}{\partial s_{t-1}} = \begin{pmatrix} J^{hh}_t & J^{hc}_t \\ " \
           r"J^{ch}_t & J^{cc}_t \end{pmatrix}" in tex
    # the cell-state path: dc_t/dc_{t-1} = diag(f_t), no weight matrix
    assert r"J^{cc}_t = \frac{\partial c_{t}}{\partial c_{t-1}} &= \operatorname{diag}\left(f_{t}\right)." in tex
    # dh_t/dc_{t-1} = diag(o_t (1 - tanh^2 c_t) f_t)
    assert (r"J^{hc}_t = \frac{\partial h_{t}}{\partial c_{t-1}} &= \operatorname{diag}\left(f_{t} \odot o_{t} \odot "
            r"\left(1 - \tanh^{2}{\left(c_{t} \right)}\right)\right)") in tex
    # dh_t/dh_{t-1} has one term per gate, each a diagonal factor times that gate's recurrent weights
    hh = tex[tex.index("J^{hh}_t = "):tex.index("J^{hc}_t = ")]
    assert [w for w in re.findall(r"\\right\) (W_\{h[ifgo]\})", hh)] == ["W_{hi}", "W_{hf}", "W_{hg}", "W_{ho}"]
    # adjoints: the cell state collects the path through h_t and the path from step t + 1
    assert (r"\bar{c}_{t} &= \bar{h}_{t} \odot o_{t} \odot \left(1 - \tanh^{2}{\left(c_{t} \right)}\right) "
            r"+ \epsilon^{c}_{t}") in tex
    assert r"\tilde{c}_{t-1} &= \bar{c}_{t} \odot f_{t}" in tex
    assert r"\frac{\mathrm{d}L}{\mathrm{d}W_{hf}} &= \sum_{t=1}^{T} \overline{W_{hf} h_{t-1}} h_{t-1}^{\top}" in tex


def test_gru_document_has_its_reset_gate_inside_the_candidate():
    tex = tex_of("gru")
    assert r"n_{t} &= \tanh{\left(W_{in} x_{t} + b_{in} + r_{t} \odot \left(W_{hn} h_{t-1} + b_{hn}\right) \right)}" \
        in tex
    assert r"J^{hh}_t = \frac{\partial h_{t}}{\partial h_{t-1}} &= \operatorname{diag}\left(z_{t}\right)" in tex
    assert r"\tilde{h}_{t-1} &= \bar{h}_{t} \odot z_{t}" in tex


MINE = """# A user's cell: 50% of the name_with_underscores & {braces} must print as text.
cell mine2
input x[D]
state h[H]
param W[H, H]
param U[H, D]
param b[H]
cand = tanh(W @ h + U @ x + b)
h' = sigmoid(U @ x) * h + (1 - sigmoid(U @ x)) * cand
"""


def test_user_cell_gets_a_derivation_that_compiles_and_goes_with_it(tmp_path):
    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    root, user = tmp_path / "generated", tmp_path / "user.json"
    src = tmp_path / "mine2.cell"
    src.write_text(MINE)
    _, changed = _add_cell(src, dirs, root, user, base=())
    assert "latex/cell_mine2.tex" in changed
    tex = (root / "latex" / "cell_mine2.tex").read_text()
    assert r"50\% of the name\_with\_underscores \& \{braces\}" in tex
    assert r"\mathit{cand}_{t} &= \tanh" in tex
    exe = shutil.which("pdflatex")
    if exe is None:
        pytest.skip("pdflatex NOT FOUND: the user cell's document was NOT compiled")
    proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "-output-directory", str(tmp_path),
                           str(root / "latex" / "cell_mine2.tex")], capture_output=True, text=True, timeout=120)
    log = (tmp_path / "cell_mine2.log").read_text(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
    _remove_cell("mine2", dirs, root, user, base=())
    assert not (root / "latex" / "cell_mine2.tex").exists()
