"""Smoke test: the benchmark runs end to end at the tiny size (no timing is asserted: machines are noisy)."""
import io

import numpy as np

from bench.__main__ import SIZES, bench, check_agree, main, problem
from bench.peers import available, gemm_floor, ours


def test_benchmark_runs_at_tiny_size(capsys):
    peers = [p for p in ("pytorch", "jax") if available(p)]
    out = io.StringIO()
    rows = bench(["tiny"], [np.float64], ["tanh"], repeats=1, peers=peers, out=out)
    assert len(rows) == 1 and set(rows[0][3]) == {"ours", "floor", *peers}
    assert "tanh     tiny    float64" in out.getvalue()
    assert main(["--sizes", "tiny", "--dtypes", "float32", "--repeats", "1"]) == 0
    assert "ours/best" in capsys.readouterr().out


def test_agreement_check_catches_a_wrong_gradient():
    args = problem(*SIZES["tiny"], np.float64)
    good = ours("tanh")(*args)
    bad = (good[0], good[1], good[2] * 1.01, good[3], good[4])
    try:
        check_agree("broken", bad, good, np.float64)
    except AssertionError as e:
        assert "dV" in str(e)
    else:
        raise AssertionError("a 1% error in dV was not caught")


def test_floor_runs():
    args = problem(*SIZES["tiny"], np.float32)
    assert gemm_floor(*args)(*args)[2].shape == (32, 16)
