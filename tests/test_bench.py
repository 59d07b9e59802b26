"""Smoke test: the benchmark runs end to end at the tiny size (no timing is asserted: machines are noisy)."""
import io

import numpy as np
import pytest

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


# --- cells: ours against torch.nn.LSTM / GRU, JAX and the floor -------------------------------------------------------

def test_cell_benchmark_checks_every_peer_and_reports_ratios():
    from bench import cells

    peers = [p for p in ("pytorch", "jax") if available(p)]
    out = io.StringIO()
    rows = cells.bench(["lstm", "gru"], ["tiny"], ["float64"], repeats=1, peers=peers, threads=0, out=out)
    assert [r[:3] for r in rows] == [("lstm", "tiny", "float64"), ("gru", "tiny", "float64")]
    assert all(set(r[3]) == {"ours", "floor", *peers} for r in rows)
    assert "lstm  tiny    float64" in out.getvalue()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_peers_agree_with_ours_and_a_wrong_gradient_is_caught(cell):
    from bench import cells

    args, G = cells.problem(cell, 7, 3, 4, 5, np.float64)
    want = cells.ours(cell)(args, G)
    for peer in [p for p in ("pytorch", "jax") if available(p)]:
        run = cells.torch_cell(cell, args, G, 1) if peer == "pytorch" else cells.jax_cell(cell, args, G)
        cells.check_agree(peer, run(args, G), want, "float64")
    bad = list(want)
    bad[-3] = bad[-3] * 1.01  # weight_hh's gradient off by 1 %
    with pytest.raises(AssertionError, match=f"gradient {len(want) - 3}"):
        cells.check_agree("broken", bad, want, "float64")


def test_cell_floor_does_the_products_of_the_right_shapes():
    from bench import cells

    args, G = cells.problem("lstm", 6, 2, 3, 4, np.float32)
    dx, dh0, dW_ih, dW_hh, db = cells.gemm_floor("lstm", args, G)(args, G)
    assert dx.shape == (6 * 2, 3) and dh0.shape == (2, 4) and dW_ih.shape == (16, 3) and dW_hh.shape == (16, 4)


def test_an_unknown_peer_is_named_not_a_traceback():
    import pytest
    from bench.peers import installed_peers

    with pytest.raises(SystemExit, match="unknown peer.*nosuch.*known: pytorch, jax"):
        installed_peers("pytorch,nosuch")
