"""The demo: the softmax gradient SymPy derives, and a short training run whose loss falls well below log V."""
import io

import numpy as np
import pytest

from demo.__main__ import main, train
from demo.softmax import derive_gradient, softmax_cross_entropy
from demo.text import stdlib_text


def test_sympy_derives_softmax_minus_onehot():
    grad, equal = derive_gradient(K=4, y=2)
    assert equal and len(grad) == 4


def test_softmax_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 2, 5))
    y = rng.integers(0, 5, size=(3, 2))
    _, g = softmax_cross_entropy(z, y)
    eps = 1e-6
    for idx in [(0, 0, 1), (2, 1, 4), (1, 0, 0)]:
        e = np.zeros_like(z)
        e[idx] = eps
        fd = (softmax_cross_entropy(z + e, y)[0] - softmax_cross_entropy(z - e, y)[0]) / (2 * eps)
        assert abs(fd - g[idx]) < 1e-8


@pytest.mark.parametrize("activation", ["tanh", "gelu", "lstm", "gru"])
def test_short_training_run_learns(activation):
    text = stdlib_text()
    out = io.StringIO()
    curve, vocab = train(activation, text, iterations=250, hidden=64, seq=40, batch=8, sample_every=250, out=out)
    assert curve[-1] < 0.7 * np.log(vocab), (curve[0], curve[-1], np.log(vocab))
    printed = out.getvalue()
    assert "loss" in printed and f"--- {activation}, iteration 250" in printed  # progress bar and a sample


def test_demo_command_writes_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed: no plot to test")
    path = tmp_path / "loss.png"
    assert main(["--activations", "relu", "--iterations", "30", "--hidden", "16", "--sample-every", "0",
                 "--plot", str(path)]) == 0
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert "relu: loss" in capsys.readouterr().out.replace("      ", "")


def test_demo_command_trains_cells_with_the_same_settings(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed: no plot to test")
    path = tmp_path / "loss.png"
    assert main(["--activations", "tanh", "--cells", "lstm,gru", "--iterations", "20", "--hidden", "8",
                 "--sample-every", "0", "--plot", str(path)]) == 0
    printed = capsys.readouterr().out
    for name in ("tanh", "lstm", "gru"):
        assert f"{name}: loss" in printed
    assert "learned fastest: " in printed
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_demo_refuses_an_unknown_cell(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--cells", "lstm,nope"])
    assert e.value.code == 2 and "unknown cell(s) nope" in capsys.readouterr().err
