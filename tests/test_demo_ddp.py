"""demo.ddp: the PyTorch character model trains in one process and, under torchrun, in two (gloo)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: the DDP demo is not run")

ROOT = Path(__file__).resolve().parent.parent


def test_one_process(capsys):
    from demo.ddp import main

    assert main(["--iterations", "50", "--hidden", "16", "--seq", "10", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "step    50  loss" in out and "(1 process, cpu)" in out


def test_two_processes_under_torchrun(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch build has no gloo backend for torch.distributed")
    env = dict(os.environ, OMP_NUM_THREADS="1", RNN_BPTT_CACHE=str(tmp_path / "kernels"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "demo.ddp", "--iterations", "50", "--hidden", "16", "--seq", "10", "--batch", "4"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "(2 processes, cpu)" in run.stdout
