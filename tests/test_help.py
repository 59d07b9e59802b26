"""Command-line help: defaults shown, and the functions an expression may call listed from the parser's table."""
import importlib

import pytest

from derive.parse import FUNCTIONS


def _help(module, argv, capsys):
    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(argv + ["--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # unwrapped: argparse wraps at the terminal width


def test_codegen_add_help_lists_every_allowed_function(capsys):
    text = _help("codegen.__main__", ["add"], capsys)
    for name in FUNCTIONS:
        assert f" {name}" in text, name
    assert "max(a, b)" in text and "constants pi, e" in text and "swish2 'x*sigmoid(2*x)'" in text


@pytest.mark.parametrize("module, argv, shown", [
    ("analysis.__main__", [], ["--T T sequence length (default: 60)", "(default: tanh,relu,sigmoid)"]),
    ("bench.__main__", [], ["(default: 15)", "(default: float32,float64)"]),
    ("demo.__main__", [], ["(default: 1500)", "Adam's learning rate (default: 0.003)"]),
    ("bench.memory", [], ["(default: large)"]),
    ("bench.profile", [], ["(default: tanh)", "(default: 5)"]),
])
def test_help_shows_defaults(module, argv, shown, capsys):
    text = _help(module, argv, capsys)
    for piece in shown:
        assert piece in text, (piece, text)
