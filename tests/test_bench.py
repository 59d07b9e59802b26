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
    assert "tanh       tiny    float64" in out.getvalue()
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


# --- the busy neighbour, every activation, the README's tables ----------------------------------------------------

@pytest.fixture
def spinners(monkeypatch):
    """Every busy-neighbour process the benchmark starts, recorded."""
    import subprocess

    from bench import busy

    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(busy.subprocess, "Popen", Recorded)
    return started


def test_busy_mode_runs_a_spinner_and_stops_it(spinners, capsys):
    assert main(["--sizes", "tiny", "--dtypes", "float64", "--repeats", "1", "--peers=", "--busy"]) == 0
    assert len(spinners) == 1 and spinners[0].poll() is not None
    assert "1 process(es) spinning" in capsys.readouterr().out


@pytest.mark.parametrize("error", [RuntimeError("a peer failed"), KeyboardInterrupt()])
def test_busy_mode_stops_the_spinner_when_the_benchmark_fails(spinners, monkeypatch, error):
    import bench.__main__ as bench_main

    seen = []

    def failing(*args, **kwargs):
        seen.append(spinners[0].poll())  # running while the benchmark runs
        raise error

    monkeypatch.setattr(bench_main, "bench", failing)
    with pytest.raises(type(error)):
        main(["--sizes", "tiny", "--peers=", "--busy"])
    assert seen == [None] and len(spinners) == 1 and spinners[0].poll() is not None


def test_the_cell_benchmark_stops_its_spinner_too(spinners, monkeypatch):
    from bench import cells

    def failing(*args, **kwargs):
        raise RuntimeError("a cell failed")

    monkeypatch.setattr(cells, "bench", failing)
    with pytest.raises(RuntimeError, match="a cell failed"):
        cells.main(["--cells", "lstm", "--sizes", "tiny", "--peers=", "--busy"])
    assert len(spinners) == 1 and spinners[0].poll() is not None


def test_a_spinner_exits_when_the_benchmark_is_killed(tmp_path):
    """SIGKILL runs no cleanup: the spinner must notice that its parent is gone and exit by itself."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = ("import time; from bench.busy import busy\n"
            "with busy(1) as s:\n    print(s[0].pid, flush=True)\n    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                              stdout=subprocess.PIPE, text=True)
    spinner = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def gone():
        try:
            state = Path(f"/proc/{spinner}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        return state == "Z"  # exited, waiting for init to reap it

    for _ in range(100):  # up to 10 s; it checks its parent every ~5 ms
        if gone():
            break
        time.sleep(0.1)
    else:
        os.kill(spinner, signal.SIGKILL)
        raise AssertionError("the spinner outlived the killed benchmark")


def test_all_activations_parse_and_an_unknown_one_is_named(capsys):
    import generated
    from bench.__main__ import parse_activations

    names = parse_activations("all")
    assert len(names) == 14 and names[:2] == ["identity", "tanh"] and set(names) <= set(generated.ACTIVATIONS)
    assert parse_activations("tanh,gelu") == ["tanh", "gelu"]
    with pytest.raises(SystemExit):
        main(["--activations", "tanh,nosuch"])
    assert "unknown activation(s) nosuch" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["identity", "leaky_relu", "elu", "selu", "softsign", "gelu_tanh", "sin"])
def test_every_activation_has_peers_that_agree_with_ours(name):
    from bench.peers import PEERS

    args = problem(*SIZES["tiny"], np.float64)
    want = ours(name)(*args)
    peers = [p for p in ("pytorch", "jax") if available(p)]
    if not peers:
        pytest.skip("neither PyTorch nor JAX (the bench extra) is installed: no peer to compare with")
    for peer in peers:
        check_agree(peer, PEERS[peer](*args, activation=name)(*args), want, np.float64)


def test_markdown_tables():
    from bench.__main__ import markdown

    rows = [("tanh", "tiny", "float64", {"ours": 1e-3, "pytorch": 4e-3, "jax": 2e-3, "floor": 5e-4}),
            ("gelu", "tiny", "float64", {"ours": 3e-3, "pytorch": 4e-3, "jax": 2e-3})]
    assert markdown(rows, ["pytorch", "jax"], "Title") == (
        "Title\n\n"
        "PyTorch: nn.RNN for tanh and relu, a loop of torch ops for the others; JAX: jit(grad(scan)); floor: only "
        "the matrix products, same BLAS as ours\n\n"
        "| activation | size | dtype | ours (ms) | PyTorch (ms) | JAX (ms) | floor (ms) | ours / best peer | "
        "ours / floor |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        "| tanh | tiny | float64 | 1.00 | 4.00 | 2.00 | 0.50 | 0.50 | 2.00 |\n"
        "\n"
        "ours / the faster peer (below 1: ours is faster)\n\n"
        "| activation | tiny float64 |\n"
        "|---|---|\n"
        "| tanh | 0.50 |\n"
        "| gelu | 1.50 |\n")


def test_a_kinked_activation_in_float32_tolerates_one_flipped_branch_but_not_a_wrong_peer():
    args = problem(*SIZES["tiny"], np.float32)
    good = ours("relu")(*args)
    flipped = (good[0] * (1 + 4e-3), *good[1:])  # as one E_t on the other side of the kink did at large
    check_agree("relu peer", flipped, good, np.float32, kinked=True)
    with pytest.raises(AssertionError, match="dx"):
        check_agree("tanh peer", flipped, good, np.float32)
    wrong = (good[0], good[1], good[2] * 1.1, *good[3:])  # a wrong slope or layout: off everywhere
    with pytest.raises(AssertionError, match="dV"):
        check_agree("relu peer", wrong, good, np.float32, kinked=True)


def test_the_targets_side_by_side_run_and_refuse_a_target_that_disagrees(capsys, monkeypatch):
    """``python -m bench.steps`` (the measurements behind NUMBA_STEP_FORWARD / _BACKWARD): a row per activation, size
    and dtype with the two ratios and what "auto" runs; a target whose gradients differ from NumPy's is named."""
    pytest.importorskip("numba", reason="Numba (the fast extra) is not installed: no compiled target to time")
    import generated
    from bench import steps

    steps.main(["--activations", "relu,gelu", "--sizes", "tiny", "--repeats", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[:3] for r in rows] == [[n, "tiny", d] for n in ("relu", "gelu") for d in ("float32", "float64")]
    assert all(float(r[3]) > 0 and float(r[6]) > 0 and r[5] in ("step", "numpy") for r in rows)
    gelu = generated.load("gelu")
    real = gelu._backward_step
    monkeypatch.setattr(gelu, "_backward_step", lambda d, dh, Wd, delta: (real(d, dh, Wd, delta), delta.__imul__(2)))
    with pytest.raises(AssertionError, match="gelu tiny float64: numba_step's dW differs"):
        steps.compare("gelu", "tiny", np.float64, "numba_step", 1)
    with pytest.raises(SystemExit):
        steps.main(["--activations", "nope"])
