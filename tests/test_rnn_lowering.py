"""The vanilla RNN modules through the lowering: Derivation -> RnnKernel -> printed lines (issue #12).

No recurrence is written by hand in rnn_module.py.jinja: the template holds no arithmetic, and every kernel line is
printed from the typed description, so changing the description changes the printed kernel.
"""
import dataclasses
import re
from pathlib import Path

import pytest

from codegen.lower import MatMul
from codegen.rnn_lower import lower_rnn
from codegen.rnn_printer import RnnPrinter
from derive import derive
from derive.catalogue import CATALOGUE, Activation

TEMPLATE = Path(__file__).resolve().parents[1] / "codegen" / "templates" / "rnn_module.py.jinja"


def _code_of(template):
    """The template's Python code: Jinja tags, docstrings, string literals and comments removed."""
    text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "0", template, flags=re.S)
    text = re.sub(r'""".*?"""', "", text, flags=re.S)
    text = re.sub(r'f?"[^"\n]*"|f?\'[^\'\n]*\'', "''", text)
    return "\n".join(line.split("#")[0] for line in text.splitlines() if not line.lstrip().startswith("@"))


def test_the_rnn_template_holds_no_arithmetic():
    """Every operator and array operation of the kernels comes from codegen.rnn_printer, not the template."""
    code = _code_of(TEMPLATE.read_text())
    found = re.findall(r"[-+*/@](?!>)=?|\bnp\.(?!asarray\b)\w+|\.sum\(|\.T\b|\bzip\(|\brange\(", code)
    assert found == [], f"arithmetic left in rnn_module.py.jinja: {found}"


def _entry(name):
    return next(a for a in CATALOGUE if a.name == name)


def _sections(name, **kw):
    entry = _entry(name)
    return RnnPrinter(lower_rnn(derive(dataclasses.replace(entry, **kw) if kw else entry))).sections()


def test_tanh_kernels_print_min_char_rnn_style_lines():
    """Exact text of the step loops of rnn_tanh: each line printed from a MatMul or an Assignment, its comment the
    derivation step; f' from h_t, so E is h itself."""
    s = _sections("tanh")
    assert s["forward"][4] == "E = h  # E_t is formed in h[t] and replaced by h_t in place: f' needs only h_t"
    head = "for E_t, h_t in zip(E, h):  # views of step t (the same array when E is h)"
    loop = s["forward"][s["forward"].index(head):]
    assert loop == [
        "for E_t, h_t in zip(E, h):  # views of step t (the same array when E is h)",
        "    np.matmul(h_prev, W_T, out=W_h)  # W h_{t-1}, rows as batch",
        "    E_t += W_h  # E_t = V x_t + W h_{t-1} + b_h",
        "    np.tanh(E_t, out=h_t)  # h_t = f(E_t)",
        "    h_prev = h_t",
        "return read_only(h), Cache(x, h0, V, W, b, h, None)",
    ]
    back = s["backward"]
    step = back[back.index("    for delta_t, dh_t in zip(delta[::-1], dh[::-1]):  # t = T, ..., 1") + 1:][:3]
    assert step == [
        "        np.add(dh_t, W_delta, out=dL_dh)  # dL/dh_t = g_t + W^T delta_{t+1}",
        "        delta_t *= dL_dh  # delta_t = diag(f'(E_t)) (g_t + W^T delta_{t+1})",
        "        np.matmul(delta_t, W, out=W_delta)  # W^T delta_t, rows as batch",
    ]
    assert "            delta[t, n, i] *= dh[t, n, i] + W_delta[n, i]  # delta_t = diag(f'(E_t)) (g_t + W^T " \
           "delta_{t+1})" in s["backward_loop"]
    assert "                h[t, n, i] += W_T[j, i] * h_j  # E_t = V x_t + W h_{t-1} + b_h" in s["forward_loop"]
    assert "            h[t, n, i] = _activation_scalar(acc)  # h_t = f(E_t)" in s["forward_loop"]


@pytest.mark.parametrize("name, kw, keep", [("tanh", {}, "h"), ("relu", {}, "h"), ("sin", {}, "dh_dE"),
                                            ("gelu", {}, "dh_dE"), ("tanh", {"keep_input": True}, "dh_dE")])
def test_the_output_form_decides_what_forward_keeps(name, kw, keep):
    """f' in the output (tanh, and relu: h > 0): only h is kept and E is h; no output form (sin, gelu) or
    keep_input: the forward step computes f'(E_t) with h_t (one fused call) and keeps it over E_t."""
    entry = _entry(name)
    k = lower_rnn(derive(dataclasses.replace(entry, **kw) if kw else entry))
    assert k.keep == keep
    s = RnnPrinter(k).sections()
    fused_step = "    if for_backward:  # h_t = f(E_t); then dh_t/dE_t = diag(f'(E_t)), over E_t"
    if keep == "h":
        assert s["derivatives"] == ["return activation_derivative(cache.h)"]
        assert fused_step not in s["forward"]
        assert not any(line.endswith("out=E_t)") for line in s["forward"])  # E_t is h_t: only h_t is written
    else:
        assert s["derivatives"][0].startswith("return check_kept(cache).copy()")
        step = s["forward"][s["forward"].index(fused_step) + 1:s["forward"].index("    else:")]
        assert step[-1].endswith("out=E_t)") and any(line.endswith("out=h_t)") for line in step)  # f' last
        assert not any("activation_derivative" in line for line in s["backward"])  # nothing transcendental
    kept = "None" if keep == "h" else "E if for_backward else None"  # forward(..., for_backward=False): inference
    assert s["forward"][-1] == f"return read_only(h), Cache(x, h0, V, W, b, h, {kept})"


def test_a_changed_description_changes_the_printed_kernel():
    """The printer reads the description: W h_{t-1} as h_{t-1} @ W (untransposed) prints that product instead; an
    activation left as np.where (which has no out=) is assigned into h_t whole."""
    k = lower_rnn(derive(_entry("tanh")))
    flipped = dataclasses.replace(k, step_product=dataclasses.replace(
        k.step_product, value=MatMul("h_prev", False, "W", False, "one")))
    printer = RnnPrinter(flipped)
    assert "    np.matmul(h_prev, W, out=W_h)  # W h_{t-1}, rows as batch" in printer.forward()
    assert "    np.dot(h_prev, W, W_h)  # W h_{t-1}, rows as batch" in printer.forward_blas()  # the compiled loops too
    assert "                h[t, n, i] += W[j, i] * h_j  # E_t = V x_t + W h_{t-1} + b_h" in printer.forward_loop()
    assert "    _forward_loop(h, np.ascontiguousarray(h0), np.ascontiguousarray(W))" in printer.forward()
    import sympy as sp
    from derive.parse import X as x
    three = Activation("three_pieces", sp.Piecewise((x, x > 1), (x / 2, x > -1), (x / 4 - sp.Rational(1, 4), True)))
    printed = RnnPrinter(lower_rnn(derive(three))).forward()
    assert "    h_t[...] = np.where((E_t > 1), E_t, np.where((E_t > -1), 0.5*E_t, 0.25*E_t - 0.25))  # h_t = f(E_t)" \
        in printed
    relu = RnnPrinter(lower_rnn(derive(_entry("relu")))).forward()
    assert "    np.maximum(0, E_t, out=h_t)  # h_t = f(E_t)" in relu  # one call, no function call around it


def test_a_user_activation_is_lowered_like_the_catalogue(tmp_path):
    """A parsed activation goes through the same description and printer: its rendered module's dW agrees with
    central differences of sum(h * G) to 1e-7 relative (float64, step 1e-6: truncation ~1e-12, rounding ~1e-10)."""
    import importlib.util

    import numpy as np

    from codegen.render import ENV, module_context
    from derive import parse_expression

    d = derive(Activation("cubic_soft", parse_expression("x - x**3/3"), {}))
    assert lower_rnn(d).keep == "dh_dE"  # f' = 1 - x^2 has no single form in f(x): f'(E_t) is kept
    path = tmp_path / "rnn_cubic_soft.py"
    path.write_text(ENV.get_template("rnn_module.py.jinja").render(**module_context(d)))
    spec = importlib.util.spec_from_file_location("rnn_cubic_soft_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.BACKEND = "numpy"
    rng = np.random.default_rng(3)
    T, N, D, H = 4, 2, 3, 5
    x, h0, V, W, b = (rng.standard_normal(s) * 0.3 for s in ((T, N, D), (N, H), (H, D), (H, H), (H,)))
    G = rng.standard_normal((T, N, H))
    h, cache = mod.forward(x, h0, V, W, b)
    dW = mod.backward(G, cache).dW
    num = np.zeros_like(W)
    for i in range(H):
        for j in range(H):
            Wp, Wm = W.copy(), W.copy()
            Wp[i, j] += 1e-6
            Wm[i, j] -= 1e-6
            loss = [np.sum(mod.forward(x, h0, V, w, b)[0] * G) for w in (Wp, Wm)]
            num[i, j] = (loss[0] - loss[1]) / 2e-6
    assert np.abs(dW - num).max() <= 1e-7 * np.abs(num).max()


def test_forward_returns_h_through_the_hook_the_cell_printer_uses():
    """One hook decides how a NumPy kernel returns its output sequence (a read-only view): the RNN printer takes it
    from where the cell printer does, and a printer with another hook returns h through it, in both returns."""
    from codegen import numpy_printer
    from codegen.cell_printer import NumpyCellPrinter

    assert RnnPrinter.returned is NumpyCellPrinter.returned is numpy_printer.returned
    assert numpy_printer.returned("h") == "read_only(h)"

    class Plain(RnnPrinter):
        @staticmethod
        def returned(name):
            return f"plain({name})"

    # the tiny loop, the BLAS loop where f vectorises, the compiled steps in NumPy's loop
    for name, compiled in (("tanh", 3), ("silu", 3), ("gelu", 3), ("sin", 2)):
        printed = Plain(lower_rnn(derive(_entry(name)))).forward()
        returns = [line.strip() for line in printed if line.strip().startswith("return ")]
        assert len(returns) == compiled + 1 and all(r.startswith("return plain(h), Cache(") for r in returns), returns
