"""The LaTeX derivations: printed from the same SymPy objects as the kernels, and compiled by real pdflatex."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import sympy as sp

import generated
from codegen.build import GENERATED
from codegen.latex_printer import latex
from codegen.render import _lines
from codegen.latex_printer import latex_terms
from codegen.text_printer import text
from derive import CATALOGUE, derive
from derive.parse import X as x

LATEX = GENERATED / "latex"
TEX_FILES = sorted(LATEX.glob("*.tex"))


@pytest.fixture(scope="module")
def derivations():
    return {a.name: derive(a) for a in CATALOGUE}


def test_one_document_per_activation_and_one_combined():
    assert {p.name for p in TEX_FILES} == {f"rnn_{n}.tex" for n in generated.ACTIVATIONS} | {"all_activations.tex"}


@pytest.mark.parametrize("name", generated.ACTIVATIONS)
def test_each_derivation_has_the_jacobian_and_bptt(name):
    tex = (LATEX / f"rnn_{name}.tex").read_text()
    assert r"\operatorname{diag}\left(f'(E_t)\right) W" in tex
    assert r"\delta_t &=" in tex and r"\prod_{s=k+1}^{t}" in tex and r"\gamma" in tex
    for raw in ("Derivative(", "_Dummy", "Dummy", "Lambda", "DiagMatrix", "Piecewise(", r"\mapsto", "MatrixSymbol"):
        assert raw not in tex, (name, raw)


def test_latex_fprime_is_the_kernels_fprime(derivations):
    """The f' in the LaTeX and in the kernel are printed from one SymPy expression, and the kernel computes it."""
    rng = np.random.default_rng(0)
    for name, d in derivations.items():
        tex = (LATEX / f"rnn_{name}.tex").read_text()
        for line in _lines(latex_terms(d.df)):
            assert line in tex, (name, line)
        module = generated.load(name)
        assert module.DERIVATIVE == text(d.df)
        E = rng.standard_normal(50) * 3 + 0.01
        exact = sp.lambdify(x, d.df, modules=[{"sigmoid": lambda u: 1 / (1 + np.exp(-u)),
                                                "softplus": lambda u: np.logaddexp(0, u)}, "scipy", "numpy"])
        argument = module.activation(E) if module.USES_OUTPUT else E
        np.testing.assert_allclose(module.activation_derivative(argument), exact(E) * np.ones_like(E),
                                   rtol=1e-9, atol=1e-12, err_msg=name)
        if d.uses_output:
            assert latex(d.df_h) in tex


def test_combined_document_tables_every_activation():
    tex = (LATEX / "all_activations.tex").read_text()
    table = tex.split(r"\begin{longtable}")[1].split(r"\end{longtable}")[0]
    for name in generated.ACTIVATIONS:
        assert re.search(rf"\\texttt{{{re.escape(name.replace('_', chr(92) + '_'))}}} &", table), name
        assert rf"\label{{sec:{name}}}" in tex


def _pdflatex():
    exe = shutil.which("pdflatex")
    if exe is None:
        message = ("pdflatex NOT FOUND: the LaTeX documents were NOT compiled. "
                   "Install it (apt-get install texlive-latex-base) to run this check.")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


@pytest.mark.parametrize("path", TEX_FILES, ids=[p.stem for p in TEX_FILES])
def test_compiles_with_pdflatex_without_errors_or_overfull_lines(path, tmp_path):
    exe = _pdflatex()
    for _ in range(2):  # the second run resolves the table's section references
        proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "-output-directory",
                               str(tmp_path), str(path)], capture_output=True, text=True, timeout=120)
        log = (tmp_path / f"{path.stem}.log").read_text(errors="replace")
        assert proc.returncode == 0, log[-3000:]
    assert (tmp_path / f"{path.stem}.pdf").stat().st_size > 1000
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
    assert "undefined" not in log.lower(), re.findall(r".*undefined.*", log)
