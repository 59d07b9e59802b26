"""Gradient flow through a cell: the block norms against the cell's own Jacobian, the LSTM's cell-state path, and
the command's --cells option."""
import numpy as np
import pytest

import generated
from analysis.__main__ import main
from analysis.cell_flow import analyze_cell, format_cell_table, make_cell_weights, parse_cell_spec


def test_block_norm_at_distance_one_is_the_forget_gates_largest_entry():
    """dc_T/dc_{T-1} = diag(f_T) for the LSTM, so its spectral norm is max_i f_T,i; and no block exceeds the
    whole state's norm."""
    T, N, D, H = 8, 3, 4, 5
    report = analyze_cell("lstm", T=T, N=N, D=D, H=H, scale=1.0, lyapunov_count=0)
    lstm = generated.load("lstm")
    x = np.random.default_rng(1).standard_normal((T, N, D))  # the inputs analyze_cell draws (seed + 1)
    _, cache = lstm.forward(x, np.zeros((N, H)), np.zeros((N, H)), *make_cell_weights("lstm", H, D, 1.0))
    expected = np.median(cache.f[T - 1].max(axis=1))
    np.testing.assert_allclose(report.blocks[("c", "c")][0][0], expected, rtol=1e-12)
    for med, _, _ in report.blocks.values():
        assert np.all(med <= report.full[0] * (1 + 1e-12))


def test_open_forget_gate_keeps_the_cell_state_gradient_alive():
    closed = analyze_cell("lstm", T=40, N=4, D=4, H=8, scale=1.0, lyapunov_count=3)
    opened = analyze_cell("lstm", T=40, N=4, D=4, H=8, scale=1.0, bias={"b_if": 4.0}, lyapunov_count=3)
    assert opened.bias == {"b_if": 4.0} and closed.bias == {}
    far = 30 - 1
    assert opened.blocks[("c", "c")][0][far] > 1e3 * closed.blocks[("c", "c")][0][far]
    assert opened.lyapunov[0] > closed.lyapunov[0]
    assert np.all(np.diff(opened.lyapunov) <= 0)  # largest first


def test_parse_cell_spec_names_the_bad_text():
    assert parse_cell_spec("lstm:b_if=1:b_hf=0.5") == ("lstm", {"b_if": 1.0, "b_hf": 0.5})
    with pytest.raises(ValueError, match="unknown cell 'lsmt'"):
        parse_cell_spec("lsmt")
    with pytest.raises(ValueError, match="'b_if' is not BLOCK=VALUE"):
        parse_cell_spec("lstm:b_if")
    with pytest.raises(ValueError, match="b_zz is not a bias block of gru"):
        parse_cell_spec("gru:b_zz=1")


def test_table_lists_every_block_of_the_lstm():
    table = format_cell_table([analyze_cell("lstm", T=6, N=2, D=3, H=4, lyapunov_count=2)])
    for block in ("dh_t/dh_k", "dh_t/dc_k", "dc_t/dh_k", "dc_t/dc_k"):
        assert block in table
    assert "leading Lyapunov exponents" in table


def test_command_with_cells_writes_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed: the plot is not drawn")
    out = tmp_path / "cells.png"
    assert main(["--activations", "tanh", "--cells", "lstm,lstm:b_if=1,gru", "--T", "10", "--H", "6", "--N", "3",
                 "--no-progress", "--plot", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tanh: gamma" in printed and "lstm: states h, c" in printed and "biases: b_if = 1" in printed
    assert "gru: states h" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_command_refuses_a_bad_cell_plainly(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--cells", "lstm:b_if=x", "--T", "5"])
    assert e.value.code == 2
    assert "'b_if=x' is not BLOCK=VALUE" in capsys.readouterr().err
