"""Gradient-flow analysis: the bound holds, Lyapunov exponents of a linear RNN, the command's table and plot."""
import numpy as np
import pytest

import generated
from analysis import analyze, format_table, lyapunov_exponents
from analysis.__main__ import main


def test_tanh_norms_never_exceed_the_bound_when_W_is_contractive():
    rng = np.random.default_rng(0)
    H, D, T, N = 24, 6, 40, 8
    W = rng.standard_normal((H, H))
    W *= 0.9 / np.linalg.norm(W, 2)
    V = rng.standard_normal((H, D))
    tanh = generated.load("tanh")
    _, cache = tanh.forward(rng.standard_normal((T, N, D)), np.zeros((N, H)), V, W, np.zeros(H))
    P = tanh.jacobian_products(cache, T)
    norms = np.linalg.norm(P, ord=2, axis=(2, 3))  # (T, N): P[k] = dh_T/dh_k
    bound = (tanh.GAMMA * 0.9) ** (T - np.arange(T))
    assert np.all(norms <= bound[:, None] * (1 + 1e-12))
    report = analyze("tanh", W=W, V=V, T=T, N=N, lyapunov_count=0)
    assert np.all(report.norm_q90 <= report.bound * (1 + 1e-12))
    assert np.allclose(report.bound, (0.9 ** np.arange(1, T + 1)))


def test_lyapunov_exponents_of_a_linear_rnn_are_log_abs_eigenvalues():
    """identity activation: J_s = W at every step, so lambda_i = log |eig_i(W)| for a diagonalizable W."""
    rng = np.random.default_rng(1)
    H = 8
    eigenvalues = np.array([0.97, -0.85, 0.7, 0.55, -0.4, 0.3, 0.2, 0.1])
    S = np.eye(H) + 0.3 * rng.standard_normal((H, H))  # well conditioned, not orthogonal: W is not symmetric
    W = S @ np.diag(eigenvalues) @ np.linalg.inv(S)
    identity = generated.load("identity")
    T, N = 600, 2
    _, cache = identity.forward(rng.standard_normal((T, N, 3)) * 0.1, np.zeros((N, H)),
                                rng.standard_normal((H, 3)), W, np.zeros(H))
    exponents = lyapunov_exponents(identity, cache, count=5, burn_in=100)
    expected = np.sort(np.log(np.abs(eigenvalues)))[::-1][:5]
    np.testing.assert_allclose(exponents, expected, atol=1e-2)


def test_table_has_every_activation_and_the_bound():
    reports = [analyze(n, T=12, N=4, D=3, H=6, scale=0.8, lyapunov_count=3) for n in ("tanh", "relu")]
    table = format_table(reports)
    for n in ("tanh", "relu"):
        assert f"{n}: gamma = sup|f'| = 1" in table
    assert "bound" in table and "leading Lyapunov exponents" in table


def test_command_writes_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed: the plot is not drawn")
    out = tmp_path / "flow.png"
    assert main(["--activations", "tanh,sigmoid", "--T", "15", "--H", "8", "--N", "4", "--plot", str(out)]) == 0
    printed = capsys.readouterr()
    assert "tanh: gamma" in printed.out and "sigmoid: gamma" in printed.out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "norms" in printed.err  # the progress bars


def test_command_refuses_unknown_activation(capsys):
    with pytest.raises(SystemExit):
        main(["--activations", "tanh,nope"])
    assert "unknown activation(s) nope" in capsys.readouterr().err


def test_plot_keeps_coinciding_lines_apart():
    """tanh and relu at one W share gamma = 1, so their bound lines coincide; two reports of one activation make
    every line coincide. Each line must still differ from the others in marker or dash pattern."""
    pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed: the plot is not drawn")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.gradient_flow import draw

    tanh, relu = (analyze(n, T=20, N=4, D=3, H=6, scale=0.8, lyapunov_count=2) for n in ("tanh", "relu"))
    np.testing.assert_array_equal(tanh.bound, relu.bound)  # the case the plot must survive
    fig = draw([tanh, relu, tanh])
    try:
        lines = fig.axes[0].get_lines()
        assert len(lines) == 6
        looks = [(line.get_marker(), line.get_linestyle(), str(line._dash_pattern), str(line.get_markevery()))
                 for line in lines]
        assert len(set(looks)) == len(looks), looks
        assert all(line.get_marker() not in (None, "None", "") for line in lines)
    finally:
        plt.close(fig)
