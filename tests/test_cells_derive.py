"""Cells from equations: the .cell parser's refusals, what SymPy derives, the lowering, and `add-cell`."""
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings, strategies as st

from codegen.__main__ import _add_cell, _remove_cell, main
from codegen.cell_printer import block_lines, span
from codegen.lower import MatMul, lower
from derive.cell import Assignment, derive_cell, inlined, read_cells
from derive.cellparse import CellError, parse_cell
from derive.functions import sigmoid

RNN = """
# the vanilla RNN as a cell
cell rnn
input x[D]
state h[H]
param V[H, D]
param W[H, H]
param b[H]
h' = tanh(V @ x + W @ h + b)
"""

HEAD = """cell c
input x[D]
state h[H]
param W[H, H]
param V[H, D]
param b[H]
"""


def test_parse_rnn_cell_into_stand_ins():
    cell = parse_cell(RNN)
    assert cell.name == "rnn" and cell.description == "the vanilla RNN as a cell"
    (eq,) = cell.equations
    assert eq.state == "h" and eq.symbol.name == "h_next"
    V_x, W_h, b = (sp.Symbol(n, real=True) for n in ("V_x", "W_h", "b"))
    assert eq.expr == sp.tanh(V_x + W_h + b)
    assert [(p.block, p.operand) for p in cell.products] == [("V", "x"), ("W", "h")]


def test_vanilla_rnn_jacobian_is_diag_f_prime_times_W():
    d = derive_cell(parse_cell(RNN))
    (block,) = d.jacobian
    assert (block.row, block.col, block.direct) == ("h", "h", 0)
    (factor, product), = block.terms
    assert product.block == "W"
    h_next = sp.Symbol("h_next", real=True)
    assert factor == 1 - h_next ** 2  # tanh' in the output, found by the engine
    E = sp.Symbol("E", real=True)
    assert sp.simplify(factor.subs(h_next, sp.tanh(E)) - sp.diff(sp.tanh(E), E)) == 0
    # BPTT: dL/dh_{t-1} = W^T delta with delta = g * f'(E); dV, dW, db from the same adjoint
    adj = {a.symbol.name: a.expr for a in d.adjoints}
    assert adj["d_h_next"] == sp.Symbol("g_h", real=True)
    assert adj["d_W_h"] == adj["d_V_x"] == adj["d_b"] == sp.Symbol("d_h_next", real=True) * (1 - h_next ** 2)
    assert [(g.param, g.operand) for g in d.param_grads] == [("V", "x"), ("W", "h"), ("b", None)]


def test_lstm_jacobian_blocks_equal_sympys_derivative_of_the_inlined_update():
    """The chain rule over the equations against SymPy differentiating each inlined state update directly."""
    (lstm,) = [c for c in read_cells() if c.name == "lstm"]
    d = derive_cell(lstm)
    values = {}
    for e in lstm.equations:
        values[e.symbol] = e.expr.xreplace(values)
    updates = inlined(lstm)
    rng = np.random.default_rng(0)
    point = {s: rng.standard_normal() for s in set().union(*(u.free_symbols for u in updates.values()))}
    assert {(b.row, b.col) for b in d.jacobian} == {("h", "h"), ("h", "c"), ("c", "h"), ("c", "c")}
    for b in d.jacobian:
        for factor, q in b.terms:
            want = sp.diff(updates[b.row], q.symbol)
            assert abs(float(factor.xreplace(values).subs(point)) - float(want.subs(point))) < 1e-12
        want = sp.diff(updates[b.row], sp.Symbol(b.col, real=True))
        assert abs(float(sp.sympify(b.direct).xreplace(values).subs(point)) - float(want.subs(point))) < 1e-12


@pytest.mark.parametrize("body, message", [
    ("h' = tanh(W @ h + q)", "line 7: equation \"h'\": undefined name 'q'"),
    ("h' = tanh(W @ h + V @ x + b)\nh' = h", "state 'h' is updated twice"),
    ("a = tanh(W @ h)", "state 'h' is never updated"),
    ("h' = tanh(V @ h)", "line 7: equation \"h'\": shape mismatch: V has D columns, h has size H"),
    ("a = V @ x\nh' = a * x", "the input 'x' may appear only as the right operand of @"),
    ("h' = abs(W @ h)", "line 7: equation \"h'\": abs is not differentiable everywhere"),
    ("h' = max(W @ h, b)", "max is not differentiable everywhere"),
    ("b = tanh(W @ h)\nh' = b", "intermediate name 'b' is already taken by the parameter declared at line 6"),
    ("h' = tanh(W @ (h * b))", "the right operand of @ must be the input 'x' or a previous state"),
    ("h' = tanh(W @ h) + __import__(\"os\")", "unknown function '__import__'"),
    ("h' = tanh(W @ h) + len('os')", "a prime (') must follow a state's name"),
    ("h' = tanh(W @ h) + \"os\"", "literal"),
    ("h' = tanh(W @ h).real", "attribute syntax"),
    ("h' = tanh(W @ h) + c'", "undefined name \"c'\": only states take a prime"),
    ("h' = tanh(W @ h + V @ x + b) + foo(h)", "unknown function 'foo'"),
    ("h' = tanh(W @ h + V @ x + b) + 1e999", "non-finite number"),
    ("a = W @ h\nh' = tanh(W @ x)", "shape mismatch: W has H columns, x has size D"),
    ("h' = tanh(W @ h + V @ x)", "parameter block 'b' of 'b' is never used"),
])
def test_parser_errors_name_the_equation_and_the_symbol(body, message):
    with pytest.raises(CellError) as info:
        parse_cell(HEAD + body + "\n")
    assert message in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("cell c\ninput x[D]\nstate h[H]\nparam W[H, K]\nh' = W @ h\n",
     "size 'K' is not the size of the input or of a state"),
    ("cell c\ninput x[D]\nstate h[H]\nparam np[H, H]\nh' = np @ h\n", "parameter name 'np' is reserved"),
    ("cell c\ninput x[D]\nstate h[H]\nparam W[H, H] = A, A\nh' = A @ h\n", "block of 'W' name 'A' is already taken"),
    ("cell Bad\n", "cell name 'Bad' must be a lowercase identifier"),
    ("input x[D]\nstate h[H]\n", "the cell has no 'cell NAME' line"),
    ("cell c\ninput x[D]\nstate h[H]\nparam W[H, H]\nh' = 2\n", "the right side is a constant"),
    ("cell c\ninput x[D]\nstate h[H]\nimport os\n", "cannot read 'import os'"),
])
def test_declaration_errors(text, message):
    with pytest.raises(CellError, match=None) as info:
        parse_cell(text)
    assert message in str(info.value)


def test_lowering_keeps_only_what_backward_reads():
    kernels = {c.name: lower(derive_cell(c)) for c in read_cells()}
    assert [s.name for s in kernels["lstm"].saved] == ["i", "f", "g", "o"]
    assert [s.name for s in kernels["gru"].saved] == ["r", "z", "n", "W_hn_h"]  # b_hn sits inside r * (...)
    lstm = kernels["lstm"]
    # d_W_hi_h equals d_W_ii_x (SymPy derives the same expression): computed once, stored twice
    names = [a.symbol.name for a in lstm.backward]
    assert "d_W_ii_x" in names and "d_W_hi_h" not in names and "d_b_ii" not in names
    hh = next(s for s in lstm.stores if s.product.param == "weight_hh")
    assert [sym.name for sym, _ in hh.blocks] == ["d_W_ii_x", "d_W_if_x", "d_W_ig_x", "d_W_io_x"]
    assert all(b.store is not None for b in lstm.bias_grads)  # each bias gradient is one sum after the loop
    assert [p.hoisted for p in lstm.products] == [True, False]
    # every matrix product, with its operands and transpositions (batch in rows: W u is u @ W^T)
    assert [p.matmul for p in lstm.products] == [MatMul("x", False, "weight_ih", True, "all"),
                                                 MatMul("h", False, "weight_hh", True, "one")]
    shared = "d_weight_ih_x"  # dL/d(weight_ih x) = dL/d(weight_hh h) for the LSTM: one array
    assert lstm.carries[0].products == (MatMul(shared, False, "weight_hh", False, "one"),)
    assert lstm.carries[1].products == () and lstm.carries[1].direct.name == "d_c"
    assert lstm.weight_grads == (("weight_ih", MatMul(shared, True, "x", False, "all")),
                                 ("weight_hh", MatMul(shared, True, "h_prev", False, "all")))
    assert lstm.input_grad == (MatMul(shared, False, "weight_ih", False, "all"),)


def test_block_lines_share_subexpressions_within_a_level_only():
    a, b, c, u = sp.symbols("a b c u", real=True)
    lines = block_lines([Assignment(a, sigmoid(u) * 2), Assignment(b, sigmoid(u) + 1), Assignment(c, a * sp.tanh(b))])
    assert lines == ["_tmp0 = sigmoid(u)", "a = 2*_tmp0", "b = _tmp0 + 1", "c = a*np.tanh(b)"]


def test_span_prints_block_slices():
    assert [span(k, "H") for k in range(3)] == [":H", "H:2 * H", "2 * H:3 * H"]


MGU2 = """# a second minimal gated unit, with another name, for the add-cell tests
cell mgu2
input x[D]
state h[H]
param U[H, D]
param W[H, H]
h' = (1 - sigmoid(U @ x)) * h + sigmoid(U @ x) * tanh(W @ h)
"""


def test_add_cell_writes_the_cell_and_its_module_then_remove(tmp_path):
    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    root, user = tmp_path / "generated", tmp_path / "user.json"
    src = tmp_path / "mine.cell"
    src.write_text(MGU2)
    name, changed = _add_cell(src, dirs, root, user, base=())
    assert name == "mgu2" and "cell_mgu2.py" in changed
    assert (dirs[1] / "mgu2.cell").read_text() == MGU2
    assert '"mgu2"' in (root / "__init__.py").read_text()
    _remove_cell("mgu2", dirs, root, user, base=())
    assert not (root / "cell_mgu2.py").exists() and not (dirs[1] / "mgu2.cell").exists()


@pytest.mark.parametrize("text, message", [
    (MGU2.replace("tanh(W @ h)", "tanh(W @ q)"), "undefined name"),
    (MGU2.replace("cell mgu2", "cell taken"), "cell name 'taken' is already taken"),
    (MGU2.replace("(1 - sigmoid(U @ x)) * h", "abs(h)"), "abs is not differentiable"),
    (MGU2.replace("param W[H, H]", "param W[H, D]"), "shape mismatch"),
])
def test_failed_add_cell_writes_nothing(tmp_path, text, message, capsys):
    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    (dirs[0] / "taken.cell").write_text(MGU2.replace("cell mgu2", "cell taken"))
    root, user = tmp_path / "generated", tmp_path / "user.json"
    src = tmp_path / "bad.cell"
    src.write_text(text)
    with pytest.raises(CellError, match=message):
        _add_cell(src, dirs, root, user, base=())
    assert not root.exists() and not dirs[1].exists()


def test_add_cell_command_reports_errors_plainly(tmp_path, capsys):
    src = tmp_path / "bad.cell"
    src.write_text(HEAD + "h' = tanh(W @ h + q)\n")
    assert main(["add-cell", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad.cell: line 7: equation \"h'\": undefined name 'q'")
    assert "Traceback" not in err
    assert main(["add-cell", str(tmp_path / "missing.cell")]) == 2
    assert "cannot read cell file" in capsys.readouterr().err


# --- fuzzing: any text gives a Cell or a CellError, quickly ----------------------------------------------------------

def _check_text(text):
    import time

    start = time.perf_counter()
    try:
        cell = parse_cell(text)
    except CellError:
        pass
    else:
        derive_cell(cell)
    assert time.perf_counter() - start < 2.0, text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["h' =", "a =", "tanh(", "sigmoid(", "W @ h", "V @ x", "W @ x", "b", "h", "x", "a",
                                 "c'", "*", "+", "-", "/", "**", ")", "2", "1e400", "'", "\"", "@", "abs(", ".real",
                                 "__import__(", "\n"]), max_size=25))
def test_mutated_equations(tokens):
    _check_text(HEAD + " ".join(tokens) + "\n")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=120))
def test_arbitrary_text(text):
    _check_text(text)


TWO_SIZES = """# two states of different sizes, the second not the output
cell two
input x[D]
state h[H]
state m[K]
param U[H, D]
param W[H, H]
param P[K, H] = P_a, P_b
param M[K, K]
param Q[H, K]
m' = sigmoid(P_a @ h) * m + tanh(M @ m + P_b @ h) ** 3
h' = tanh(U @ x + W @ h + Q @ m) * sqrt(1 + h ** 2) - exp(-h ** 2) / 4
"""


def test_a_user_cell_with_two_state_sizes_is_generated_and_gradchecks(tmp_path):
    """add-cell end to end: the module it writes runs, and its backward matches central differences (< 1e-7)."""
    import importlib.util

    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    root = tmp_path / "generated"
    (tmp_path / "two.cell").write_text(TWO_SIZES)
    _add_cell(tmp_path / "two.cell", dirs, root, tmp_path / "user.json", base=())
    spec = importlib.util.spec_from_file_location("cell_two_under_test", root / "cell_two.py")
    two = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(two)
    assert two.ARGUMENTS == ("x", "h0", "m0", "U", "W", "P", "M", "Q") and two.SHAPES["P"] == ("2*K", "H")
    T, N, D, H, K = 5, 2, 3, 4, 2
    rng = np.random.default_rng(0)
    shapes = ((T, N, D), (N, H), (N, K), (H, D), (H, H), (2 * K, H), (K, K), (H, K))
    args = [rng.standard_normal(s) * 0.5 for s in shapes]
    G, Gm = rng.standard_normal((T, N, H)), rng.standard_normal((N, K))

    def loss(a):
        out, cache = two.forward(*a)
        return float(np.sum(G * out) + np.sum(Gm * cache.m[-1]))

    _, cache = two.forward(*args)
    grads = two.backward(G, cache, dfinal=Gm)
    eps = 1e-6
    for k, g in enumerate(grads):
        fd = np.empty_like(g)
        for idx in np.ndindex(g.shape):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            fd[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        assert np.abs(g - fd).max() / np.abs(fd).max() < 1e-7, two.ARGUMENTS[k]
    assert two.jacobian(cache, 2).shape == (N, H + K, H + K)


def test_the_vanilla_rnn_as_a_cell_reproduces_the_rnn_kernels(tmp_path):
    """The lowering covers the vanilla RNN: the cell RNN (tanh) generated by add-cell has the rnn_tanh module's
    forward(x, h0, V, W, b) and Grads(dx, dh0, dV, dW, db), and agrees with it to 1e-12 relative."""
    import importlib.util

    import generated

    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    root = tmp_path / "generated"
    (tmp_path / "rnn.cell").write_text(RNN)
    _add_cell(tmp_path / "rnn.cell", dirs, root, tmp_path / "user.json", base=())
    spec = importlib.util.spec_from_file_location("cell_rnn_under_test", root / "cell_rnn.py")
    cell = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cell)
    rnn = generated.load("tanh")
    rng = np.random.default_rng(1)
    T, N, D, H = 6, 3, 4, 5
    args = [rng.standard_normal(s) * 0.5 for s in ((T, N, D), (N, H), (H, D), (H, H), (H,))]
    G = rng.standard_normal((T, N, H))
    h1, c1 = cell.forward(*args)
    h2, c2 = rnn.forward(*args)
    assert np.abs(h1 - h2).max() <= 1e-12 * np.abs(h2).max()
    g1, g2 = cell.backward(G, c1), rnn.backward(G, c2)
    assert g1._fields == g2._fields == ("dx", "dh0", "dV", "dW", "db")
    for a, b in zip(g1, g2):
        assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
    assert np.abs(cell.jacobian(c1, 3) - rnn.jacobian(c2, 3)).max() <= 1e-12
    assert [s.name for s in lower(derive_cell(parse_cell(RNN))).saved] == []  # tanh' from h_t: nothing but h kept


def test_rnn_cell_prints_min_char_rnn_style_kernels():
    """Exact text of the vanilla RNN cell's step loops: every line comes from the lowering."""
    from codegen.cell_printer import NumpyCellPrinter

    sections = NumpyCellPrinter(lower(derive_cell(parse_cell(RNN)))).sections()
    loop = sections["forward"][sections["forward"].index("for _t in range(_T):"):]
    assert loop == [
        "for _t in range(_T):",
        "    W_h = h @ W.T  # W @ h",
        "    V_x = _V_x[_t]",
        "    h_next = np.tanh(V_x + W_h + b)  # h' = tanh(V @ x + W @ h + b)",
        "    _h_seq[_t] = h_next",
        "    h = h_next",
        "return read_only(_h_seq), Cache(x, h0, V, W, b, _h_seq)",
    ]
    back = sections["backward"]
    step = back[back.index("for _t in range(_T - 1, -1, -1):") + 1:]
    assert step[:5] == [
        "    h_next = _h_seq[_t]  # h_t",
        "    g_h = _d_out[_t] + _carry_h  # dL/dh_t from outside the step",
        # delta_t = (g_t + W^T delta_{t+1}) * f'(E_t), f' from h_t (1 - h^2 factored by the numerics pass)
        "    d_V_x = g_h*(1 - h_next)*(h_next + 1)",
        "    _d_V_x[_t] = d_V_x",  # dL/d(V x_t) = dL/d(W h_(t-1)): one array serves dV, dW, db and dx
        "    _carry_h = _d_V_x[_t] @ W  # dL/dh_(t-1)",
    ]
    assert back[-6:] == [
        "_grad_V = _d_V_x.reshape(_T * _N, H).T @ x.reshape(_T * _N, D)  # sum_t dL/dP_t x_t^T",
        "_h_prev = np.concatenate((h0[None], _h_seq[:-1]))  # h_0..h_(T-1)",
        "_grad_W = _d_V_x.reshape(_T * _N, H).T @ _h_prev.reshape(_T * _N, H)  # sum_t dL/dP_t h_(t-1)^T",
        "_grad_b = _d_V_x.sum(axis=(0, 1))  # every block at once: sum_t, n of dL/dP_t",
        "_grad_x = (_d_V_x.reshape(_T * _N, H) @ V).reshape(_T, _N, D)",
        "return Grads(_grad_x, _carry_h, _grad_V, _grad_W, _grad_b)",
    ]


def _nested(depth):
    """A user cell whose update nests tanh ``depth`` deep, each level reading the gate and the state again."""
    inner = "h"
    for _ in range(depth):
        inner = f"tanh(f * {inner} + h) ** 3"
    return ("cell nested\ninput x[D]\nstate h[H]\nparam weight_ih[H, D] = W_xf\nparam weight_hh[H, H] = W_hf\n"
            f"param bias[H] = b_f\n\nf = sigmoid(W_xf @ x + W_hf @ h + b_f)\nh' = (1 - f) * h + f * {inner}\n")


def test_a_deeply_nested_user_cell_is_added_quickly_and_its_gradients_are_right(tmp_path, monkeypatch):
    """``add-cell`` of a cell nesting tanh six deep: the numerics pass proves each rewrite with simplify only on
    small differences (PROOF_MAX_OPS; it once ran simplify on the whole nested expression: 49 s three deep, minutes
    four deep and beyond), and the kernel's gradients agree with central differences to 1e-7 relative (float64,
    step 1e-6: truncation ~1e-12, rounding ~1e-10 of terms of order 1)."""
    import importlib.util
    import sys

    from codegen import passes
    from tests.test_cells import cell_args, central_differences, loss_terms, rel

    proved = []
    simplify = sp.simplify

    def spy(expr, *args, **kwargs):
        if sys._getframe(1).f_code is passes._agree.__code__:
            proved.append(sp.count_ops(expr))
        return simplify(expr, *args, **kwargs)

    monkeypatch.setattr(sp, "simplify", spy)
    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    root, src = tmp_path / "generated", tmp_path / "nested.cell"
    src.write_text(_nested(6))
    assert _add_cell(src, dirs, root, tmp_path / "user.json", base=())[0] == "nested"
    assert proved and max(proved) <= passes.PROOF_MAX_OPS, proved

    spec = importlib.util.spec_from_file_location("nested_cell_under_test", root / "cell_nested.py")
    cell = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cell)
    args = cell_args(cell, seed=3)
    G, final = loss_terms(cell, seed=4)
    grads = cell.backward(G, cell.forward(*args)[1], dfinal=final or None)
    for k, (name, g) in enumerate(zip(cell.ARGUMENTS, grads)):
        assert rel(g, central_differences(cell, args, G, final, k)) < 1e-7, name


def test_equations_deeper_than_the_recursion_limit_are_refused_plainly(tmp_path, monkeypatch):
    """Intermediates each a function of the one before: SymPy walks the inlined update recursively, and past
    Python's recursion limit derive_cell says so in one line (a RecursionError's thousands of lines before). The limit is lowered here so that a short chain reaches it at once (twenty
    intermediates reach the default one only after minutes: the time limit's case)."""
    import sys

    lines = ["f = sigmoid(W_xf @ x + W_hf @ h + b_f)", "g0 = tanh(f * h + h) ** 3"]
    lines += [f"g{i} = tanh(f * g{i - 1} + h) ** 3" for i in range(1, 6)]
    src = tmp_path / "chain.cell"
    src.write_text("cell chain\ninput x[D]\nstate h[H]\nparam weight_ih[H, D] = W_xf\nparam weight_hh[H, H] = W_hf\n"
                   "param bias[H] = b_f\n\n" + "\n".join(lines) + "\nh' = (1 - f) * h + f * g5\n")
    cell = parse_cell(src.read_text())
    limit = sys.getrecursionlimit()
    sp.core.cache.clear_cache()  # SymPy remembers derivatives: an earlier test's would need no recursion here
    try:
        sys.setrecursionlimit(len(__import__("inspect").stack()) + 120)
        with pytest.raises(CellError, match="cell chain: its equations, with each intermediate written into the "
                                            "next, nest too deeply for SymPy to differentiate"):
            derive_cell(cell)
    finally:
        sys.setrecursionlimit(limit)


def test_the_lowering_says_what_the_jacobians_step_loads_and_the_printer_loads_only_that():
    """_step_factors(cache, t) loads what the lowering lists, not the whole cache filtered afterwards. The LSTM's
    Jacobian blocks are written in c_(t-1), c_t (tanh(c_t) in dh/d.) and the four gates: h's sequence is not read,
    and no block of a stacked array is sliced (the gates are kept one by one), so no size is loaded. The GRU's
    read h_(t-1), its gates r, z, n, W_hn h_(t-1) and the bias block b_hn, a slice of bias_hh: its size H."""
    import dataclasses

    from codegen.cell_printer import NumpyCellPrinter

    cells = {c.name: lower(derive_cell(c)) for c in read_cells() if c.name in ("lstm", "gru")}
    lstm, gru = cells["lstm"], cells["gru"]
    assert (lstm.jacobian_loads, lstm.jacobian_sizes) == (("c", "i", "f", "g", "o"), ())
    assert (gru.jacobian_loads, tuple(map(str, gru.jacobian_sizes))) == (("h", "r", "z", "n", "W_hn_h"), ("H",))
    printed = NumpyCellPrinter(lstm).factors()
    assert [line for line in printed if " = cache" in line or ".shape" in line] == [
        "x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh = cache[:7]", "_c_seq = cache.c", "_i_seq = cache.i",
        "_f_seq = cache.f", "_g_seq = cache.g", "_o_seq = cache.o", "_T, _N, D = x.shape"]
    # the printer follows the description: a kernel that says the step reads h's sequence and H loads them
    wider = dataclasses.replace(lstm, jacobian_loads=("h",) + lstm.jacobian_loads,
                                jacobian_sizes=gru.jacobian_sizes)
    printed = NumpyCellPrinter(wider).factors()
    assert "_h_seq = cache.h" in printed and "H = h0.shape[1]" in printed
