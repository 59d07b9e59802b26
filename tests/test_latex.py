"""The LaTeX derivations: printed from the same SymPy objects as the kernels, in textbook forms that SymPy proves
equal to the derived ones, and compiled by real pdflatex."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import sympy as sp

import generated
from codegen.build import GENERATED
from codegen.latex_passes import (Phi, closed_form_sup, common_coefficients, fold_abs_branches, fold_sign,
                                  long_constants, name_normal, name_parameters, phi, positive_sums, proved_equal,
                                  textbook, unnamed)
from codegen.latex_printer import latex
from codegen.render import _exact_decimal, _width, latex_context
from codegen.text_printer import text
from derive import CATALOGUE, derive
from derive.elementwise import H as h
from derive.functions import sigmoid
from derive.parse import X as x

LATEX = GENERATED / "latex"
TEX_FILES = sorted(LATEX.glob("*.tex"))
RNN_TEX_FILES = [p for p in TEX_FILES if not p.stem.startswith("cell_")]  # the cells': tests/test_cell_latex.py
BY_NAME = {a.name: a for a in CATALOGUE}


@pytest.fixture(scope="module")
def derivations():
    return {a.name: derive(a) for a in CATALOGUE}


def tex_of(name):
    return (LATEX / f"rnn_{name}.tex").read_text()


# --- printer rules: one exact string each ---------------------------------------------------------------------------

def test_printer_writes_a_positive_constant_first_in_a_sum():
    assert latex(1 + sp.Abs(x)) == r"1 + \left|{x}\right|"
    assert latex(1 - sigmoid(x)) == r"1 - \sigma\left(x\right)"


def test_printer_puts_sums_and_cases_after_the_factors_they_multiply():
    s = sigmoid(x)
    assert latex(s * (1 - s)) == r"\sigma\left(x\right) \left(1 - \sigma\left(x\right)\right)"
    lam = sp.Symbol("lambda", positive=True)
    assert latex(lam * sp.Piecewise((x, x > 0), (0, True))) == (
        r"\lambda \begin{cases} x & \text{for}\: x > 0 \\0 & \text{otherwise} \end{cases}")


def test_printer_writes_named_constants_in_the_given_order():
    alpha, lam = sp.symbols("alpha lambda", positive=True)
    assert latex(alpha * lam * sp.exp(x)) == r"\alpha \lambda e^{x}"  # SymPy's alphabetical order
    assert latex(alpha * lam * sp.exp(x), named_order=("lambda", "alpha")) == r"\lambda \alpha e^{x}"


def test_printer_names_the_standard_normal():
    assert latex(x * Phi(x)) == r"x \Phi\left(x\right)"
    assert latex(phi(x)) == r"\varphi\left(x\right)"


# --- presentation passes: each on its own, each proved equal --------------------------------------------------------

def test_name_parameters_writes_selu_constants_as_lambda_alpha(derivations):
    selu = BY_NAME["selu"]
    named = long_constants(selu.params)
    alpha, lam = sorted(named, key=str)
    assert str(alpha) == "alpha" and str(lam) == "lambda"
    df = derivations["selu"].df
    form = name_parameters(df, named)
    assert form.free_symbols == {x, alpha, lam} and form.has(lam * alpha * sp.exp(x))
    assert not any(n.q > 1000 for n in form.atoms(sp.Rational)) and form.subs(named) == df
    assert name_parameters(derivations["selu"].scalar.gamma, named) == lam * alpha
    assert long_constants(BY_NAME["leaky_relu"].params) == {}  # 1/100 prints exactly: no name needed


def test_fold_sign_gives_softsigns_textbook_derivative():
    df = sp.diff(x / (1 + sp.Abs(x)), x)
    assert df.has(sp.sign)  # SymPy's own derivative has two terms with sign(x)
    assert fold_sign(df) == 1 / (1 + sp.Abs(x))**2


def test_fold_abs_branches_gives_softsigns_textbook_derivative_from_the_kink_rules_pieces(derivations):
    df = derivations["softsign"].df  # the kink rule writes it left piece first: (x - 1)^-2 for x <= 0
    assert isinstance(df, sp.Piecewise) and df.args[0][1] == (x <= 0)
    assert fold_abs_branches(df) == 1 / (1 + sp.Abs(x))**2


def test_fold_abs_branches_and_positive_sums_give_softsigns_output_form(derivations):
    df_h = derivations["softsign"].df_h
    assert positive_sums(fold_abs_branches(df_h)) == (1 - sp.Abs(h))**2


def test_name_normal_writes_gelu_with_phi(derivations):
    d = derivations["gelu"]
    assert name_normal(d.f) == x * Phi(x)
    assert name_normal(d.df) == Phi(x) + x * phi(x)


def test_positive_sums_gives_silus_textbook_derivative(derivations):
    s = sigmoid(x)
    assert positive_sums(derivations["silu"].df) == s * (1 + x * (1 - s))


def test_common_coefficients_groups_halves():
    grouped = common_coefficients(sp.S.Half + sp.erf(1) / 2 + sp.exp(-1))
    assert latex(grouped) == r"e^{-1} + \frac{1 + \operatorname{erf}{\left(1 \right)}}{2}"


def test_proved_equal_refuses_a_wrong_form_and_textbook_falls_back(derivations):
    df = derivations["softsign"].df
    wrong = 1 / (1 + sp.Abs(x))  # softsign itself over x, not its derivative
    assert not proved_equal(wrong, df)
    assert proved_equal(1 / (1 + sp.Abs(x))**2, df)
    assert textbook(df, candidates=(wrong,)) == 1 / (1 + sp.Abs(x))**2
    # equal away from x = 0 only: the branch boundary is checked too
    assert not proved_equal(sp.Piecewise((1, x >= 0), (0, True)), sp.Piecewise((1, x > 0), (0, True)))


def test_closed_form_sup_of_gelu_is_found_at_sqrt2(derivations):
    s = derivations["gelu"].scalar
    value, point = closed_form_sup(s.df, x, s.gamma)
    assert point == sp.sqrt(2)
    assert sp.simplify(value - ((1 + sp.erf(1)) / 2 + 1 / (sp.E * sp.sqrt(sp.pi)))) == 0  # the form
    assert abs(float(value) - 1.1289041451851) < 1e-12


def test_closed_form_sup_declines_without_a_proof(derivations):
    s = derivations["silu"].scalar  # f'' = 0 is transcendental: (x - 2) e^x = x + 2
    assert closed_form_sup(s.df, x, s.gamma) is None
    g = derivations["gelu"].scalar
    assert closed_form_sup(g.df, x, g.gamma * (1 + 1e-6)) is None  # disagrees with the numeric value: refused


# --- the generated documents ------------------------------------------------------------------------------------------

def test_one_document_per_activation_and_cell_and_one_combined():
    assert {p.name for p in TEX_FILES} == ({f"rnn_{n}.tex" for n in generated.ACTIVATIONS} | {"all_activations.tex"}
                                           | {f"cell_{n}.tex" for n in generated.CELLS})


@pytest.mark.parametrize("path", RNN_TEX_FILES, ids=[p.stem for p in RNN_TEX_FILES])
def test_every_document_states_the_conventions(path):
    tex = path.read_text()
    assert r"\frac{\partial h_t}{\partial h_k} = J_t J_{t-1} \cdots J_{k+1}" in tex  # the order it is computed in
    assert r"J_t = \frac{\partial h_t}{\partial h_{t-1}}" in tex and r"\operatorname{diag}\left(f'(E_t)\right) W" in tex
    # the loss's direct term g_t and the total derivative have distinct symbols
    assert r"$g_t = \partial L / \partial h_t$, the loss's direct term" in tex
    assert r"\frac{\mathrm{d}L}{\mathrm{d}h_t} &= g_t + W^{\top} \delta_{t+1}" in tex
    assert r"\frac{\partial L}{\partial h_t} &=" not in tex
    assert "numerator layout" in tex and "shaped like the variable" in tex
    assert r"with $\delta_t$ and $h_{t-1}$ held fixed" in tex
    # the generic vector is z, not x_1..x_n, which would read as the inputs x_t
    assert "z = (z_1, \\dots, z_n)" in tex and "x_1, \\dots, x_n" not in tex and "x_{1}" not in tex
    for raw in ("Derivative(", "_Dummy", "Dummy", "Lambda", "DiagMatrix", "Piecewise(", r"\mapsto", "MatrixSymbol"):
        assert raw not in tex, raw
    assert not re.search(r"(?<![\\a-z])(Phi|phi|sigmoid)\(", tex)  # SymPy's names, not \Phi, \varphi, \sigma


def test_combined_document_derives_the_shared_part_once():
    tex = (LATEX / "all_activations.tex").read_text()
    for once in (r"\section{Backpropagation through time}", "The Jacobian of an elementwise function",
                 r"\section{Gradients across many steps}", "numerator layout"):
        assert tex.count(once) == 1, once
    assert tex.count(r"\subsection{Activation") == len(generated.ACTIVATIONS)


def test_combined_document_tables_every_activation_without_needless_references():
    tex = (LATEX / "all_activations.tex").read_text()
    table = tex.split(r"\begin{longtable}")[1].split(r"\end{longtable}")[0]
    referred = set()
    for name in generated.ACTIVATIONS:
        row = re.search(rf"\\texttt{{{re.escape(name.replace('_', chr(92) + '_'))}}} &(.*)\\tabularnewline", table)
        assert row, name
        cells = row.group(1).split(" & ")
        referred |= {(name, column) for column, cell in zip(("f", "df", "df_h", "gamma"), cells) if "see" in cell}
        assert rf"\label{{sec:{name}}}" in tex
    # only the entries too long for a column refer to their section (before: nine, selu's and softsign's included)
    assert referred <= {("gelu_tanh", "f"), ("gelu_tanh", "df"), ("mish", "df")}, referred


def test_textbook_forms_in_the_documents():
    assert r"f'(x) = \frac{1}{\left(1 + \left|{x}\right|\right)^{2}}." in tex_of("softsign")
    assert r"f'(x) = \left(1 - \left|{h}\right|\right)^{2}" in tex_of("softsign")
    assert r"f'(x) = \sigma\left(x\right) \left(1 + x \left(1 - \sigma\left(x\right)\right)\right)." in tex_of("silu")
    gelu = tex_of("gelu")
    assert r"f(x) = x \Phi\left(x\right)," in gelu
    assert r"\Phi(u) &= \frac{1 + \operatorname{erf}{\left(\frac{u}{\sqrt{2}} \right)}}{2}" in gelu
    selu = tex_of("selu")
    assert r"f(x) = \lambda \begin{cases} x & \text{for}\: x > 0 \\\alpha \left(e^{x} - 1\right)" in selu
    assert (r"\lambda &= 1.0507009873554804934193349852946, \\" "\n"
            r"\alpha &= 1.6732632423543772848170429916717.") in selu
    assert r"\lambda \alpha e^{x}" in selu  # in the catalogue's order, not SymPy's alphabetical one
    assert "1.758099341 e" not in selu  # no truncated product of the constants in a formula
    assert r"J_t &= W." in tex_of("identity")


def test_gamma_is_an_equality_only_when_exact():
    assert r"\gamma = \sup_x |f'(x)| = \frac{1}{4}$" in tex_of("sigmoid")
    assert r"\gamma = \sup_x |f'(x)| = \lambda \alpha \approx 1.758099341$" in tex_of("selu")
    assert (r"= f'\left(\sqrt{2}\right) = \Phi\left(\sqrt{2}\right) + \sqrt{2} \varphi\left(\sqrt{2}\right) = "
            r"\frac{1}{e \sqrt{\pi}} + \frac{1 + \operatorname{erf}{\left(1 \right)}}{2} \approx 1.128904145") \
        in tex_of("gelu")
    assert r"\gamma = \sup_x |f'(x)| \approx 1.09983932\text{ (numerically)}" in tex_of("silu")
    for path in TEX_FILES:
        for sentence in re.findall(r"\\gamma = \\sup_x \|f'\(x\)\|([^$\n]*)", path.read_text()):
            decimal = re.search(r"\d\.\d", sentence)
            assert not decimal or r"\approx" in sentence[:decimal.start()], (path.name, sentence)


@pytest.mark.parametrize("slope, sentence", [
    (sp.Rational("1.23456789012345"), " = 1.23456789012345"),  # exact: every digit, not ten of them
    (sp.Rational(1, 1001), r" \approx 0.000999000999"),        # no finite decimal: a value, not an equality
])
def test_gamma_of_a_long_rational_is_exact_or_approximate(slope, sentence):
    from derive import Activation
    assert latex_context(derive(Activation("line", slope * x)))["gamma"] == sentence


def test_printed_forms_are_the_kernels_derivative(derivations):
    """Each printed f' and f'(h) is proved equal to the derived one, and the kernel computes the same numbers."""
    rng = np.random.default_rng(0)
    for name, d in derivations.items():
        tex = tex_of(name)
        a = d.activation
        named = long_constants(a.params)
        form = textbook(d.df, named)
        assert proved_equal(form, d.df, named), name
        context = latex_context(d)
        assert all(line in tex for line in context["df_lines"]), name
        module = generated.load(name)
        assert module.DERIVATIVE == text(d.df)
        E = rng.standard_normal(50) * 3 + 0.01
        printed = sp.lambdify(x, unnamed(form, named), modules=["scipy", "numpy"])
        argument = module.activation(E) if module.USES_OUTPUT else E
        np.testing.assert_allclose(module.activation_derivative(argument), printed(E) * np.ones_like(E),
                                   rtol=1e-9, atol=1e-12, err_msg=name)
        if d.uses_output:
            assert proved_equal(textbook(d.df_h, named), d.df_h, named) and context["df_h"] in tex, name


def test_exact_decimal_writes_every_digit_or_refuses():
    assert _exact_decimal(sp.Rational("1.0507009873554804934193349852946")) == "1.0507009873554804934193349852946"
    assert _exact_decimal(sp.Rational(-1, 8)) == "-0.125" and _exact_decimal(sp.Integer(3)) == "3"
    assert _exact_decimal(sp.Rational(1, 3)) is None


def test_width_reads_a_fraction_as_its_wider_part():
    assert _width(r"\frac{x}{100}") == 3
    assert _width(r"\frac{1}{\left(1 + \left|{x}\right|\right)^{2}}") == _width(r"(1 + |x|)^2")


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
    for _ in range(2):  # the second run resolves the section references
        proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "-output-directory",
                               str(tmp_path), str(path)], capture_output=True, text=True, timeout=120)
        log = (tmp_path / f"{path.stem}.log").read_text(errors="replace")
        assert proc.returncode == 0, log[-3000:]
    assert (tmp_path / f"{path.stem}.pdf").stat().st_size > 1000
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
    assert "undefined" not in log.lower(), re.findall(r".*undefined.*", log)
    pages = int(re.search(r"Output written on .*?\((\d+) pages?", log, re.S).group(1))
    # the shared derivation once, then short sections: the combined document was 20 pages when it repeated it
    assert pages <= {"all_activations": 10, "cell_lstm": 5}.get(path.stem, 3), pages
