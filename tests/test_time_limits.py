"""Each derivation runs under a time limit, and no worker process outlives the derivation or its parent."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sympy as sp

from codegen.__main__ import _add
from codegen.build import TIMEOUT_ENV, derive_all
from derive import CATALOGUE, Activation, DerivationError
from derive.parse import X as x

ROOT = Path(__file__).resolve().parent.parent
# A spawned worker starts a fresh Python and imports SymPy (1-3 s on this loaded 2-core machine) before its clock
# starts; the kill and the join take well under a second. The limit plus this much is what a caller waits at most.
SLACK = 15.0


def _stall(value):
    time.sleep(300)
    return value


class stall(sp.Function):
    """A function whose numeric value takes 300 s: the engine's first check (finite at 160 points) stalls on it.
    Every expression the issue names now derives or is refused in under a second, so none of them can stand in for
    a derivation that runs long."""

    _imp_ = staticmethod(_stall)  # what lambdify calls for it

    def fdiff(self, argindex=1):
        return sp.Integer(1)


SLOW = Activation("slow", stall(x) + x)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_slow_derivation_stops_at_the_time_limit_naming_the_step(workers):
    start = time.monotonic()
    with pytest.raises(DerivationError, match=r"slow: deriving x \+ stall\(x\) ran past the time limit of 2 s in "
                                              r"step 'checks'"):
        derive_all([Activation("quick", x), SLOW], workers=workers, timeout=2)
    assert time.monotonic() - start < 2 + SLACK


def test_the_default_limit_applies_to_derive_all_with_one_worker(monkeypatch):
    """H1's call, derive_all([...], workers=1), takes its limit from $RNN_BPTT_DERIVE_TIMEOUT (else 60 s)."""
    monkeypatch.setenv(TIMEOUT_ENV, "2")
    start = time.monotonic()
    with pytest.raises(DerivationError, match="ran past the time limit of 2 s in step 'checks'"):
        derive_all([SLOW], workers=1)
    assert time.monotonic() - start < 2 + SLACK


@pytest.mark.parametrize("value, message", [
    ("soon", r"\$RNN_BPTT_DERIVE_TIMEOUT must be a number of seconds, or 0 or none for no limit, got 'soon'"),
    ("-3", r"\$RNN_BPTT_DERIVE_TIMEOUT must be a positive number of seconds"),
])
def test_a_bad_timeout_setting_is_named(monkeypatch, value, message):
    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=message):
        derive_all([Activation("quick", x)], workers=1)


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), "5", True])
def test_a_bad_timeout_argument_is_named(timeout):
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        derive_all([Activation("quick", x)], workers=1, timeout=timeout)


def test_no_limit_derives_in_process(monkeypatch):
    """timeout=None (or $RNN_BPTT_DERIVE_TIMEOUT=0) with one worker: derived here, without a process."""
    import codegen.build as build

    def no_workers(*args):
        raise AssertionError("a worker process was started")

    monkeypatch.setattr(build, "derive_in_workers", no_workers)
    assert [d.name for d in derive_all([Activation("quick", x)], workers=1, timeout=None)] == ["quick"]
    monkeypatch.setenv(TIMEOUT_ENV, "0")
    assert [d.name for d in derive_all([Activation("quick", x)], workers=1)] == ["quick"]


def test_add_under_a_time_limit_writes_nothing(tmp_path):
    """x**3 + x takes seconds (solving the cubic for its output form): at 0.3 s it is refused, and nothing written."""
    user = tmp_path / "user.json"
    user.write_text("{}\n")
    root = tmp_path / "generated"
    with pytest.raises(DerivationError, match=r"cubic: deriving x\*\*3 \+ x ran past the time limit of 0.3 s in step"):
        _add("cubic", "x**3 + x", user, root, base=(), timeout=0.3)
    assert user.read_text() == "{}\n"
    # the writer's lock file is the only thing there: taking the lock creates the folder, nothing is written
    assert sorted(p.name for p in root.rglob("*")) == [".codegen.lock"]


def _chain_cell(n):
    """A cell of ``n`` intermediates, each a function of the one before: SymPy differentiates the inlined update
    for many minutes at n = 20 (measured: still running after 10 min), an instant at n = 1."""
    lines = ["f = sigmoid(W_xf @ x + W_hf @ h + b_f)", "g0 = tanh(f * h + h) ** 3"]
    lines += [f"g{i} = tanh(f * g{i - 1} + h) ** 3" for i in range(1, n)]
    return ("cell chain\ninput x[D]\nstate h[H]\nparam weight_ih[H, D] = W_xf\nparam weight_hh[H, H] = W_hf\n"
            "param bias[H] = b_f\n\n" + "\n".join(lines) + f"\nh' = (1 - f) * h + f * g{n - 1}\n")


def test_add_cell_under_a_time_limit_writes_nothing_and_leaves_no_worker(tmp_path):
    """A user cell is derived under the same limit as an activation (it was derived in the command's own process,
    with no limit): at 2 s add-cell refuses the twenty-intermediate chain naming the cell and the limit, writes
    nothing, and no worker process is left."""
    from codegen.__main__ import _add_cell

    src = tmp_path / "chain.cell"
    src.write_text(_chain_cell(20))
    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    root = tmp_path / "generated"
    start = time.monotonic()
    with pytest.raises(DerivationError, match=r"chain: deriving the equations of the cell 'chain' ran past the time "
                                              r"limit of 2 s in step 'differentiating the equations'"):
        _add_cell(src, dirs, root, tmp_path / "user.json", base=(), timeout=2)
    assert time.monotonic() - start < 2 + SLACK
    assert sorted(p.name for p in root.rglob("*")) == [".codegen.lock"] and not dirs[1].exists()
    if Path("/proc/self/status").exists():
        assert _children(os.getpid()) == []


def test_a_cell_derived_in_a_worker_equals_one_derived_here():
    """The built-in cells through the workers (as make derive now derives them) print the same modules as
    derived in this process."""
    from codegen.build import derive_cells
    from codegen.render import render_cells
    from derive.cell import derive_cell, read_cells

    here = render_cells([derive_cell(c) for c in read_cells()])
    assert render_cells(derive_cells(workers=2, timeout=60)) == here


@pytest.mark.parametrize("args", [["--timeout", "0.01", "--check"], ["list", "--timeout", "0.01"]])
def test_command_line_timeout(args):
    """--timeout before or after the command reaches the derivations (0.01 s: not one catalogue entry fits)."""
    proc = subprocess.run([sys.executable, "-m", "codegen", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "ran past the time limit of 0.01 s in step" in proc.stderr and "Traceback" not in proc.stderr


def test_command_line_refuses_a_bad_timeout():
    proc = subprocess.run([sys.executable, "-m", "codegen", "list", "--timeout", "soon"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "--timeout: must be a number of seconds, got 'soon'" in proc.stderr


def _children(pid):
    """PIDs of the live processes whose parent is ``pid`` and that run a derivation worker (codegen.workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("PPid", "").strip() == str(pid) and b"codegen.workers" in cmdline:
                out.append(int(entry.name))
    return out


def _alive(pid):
    """Running (a zombie waiting for a reaper counts as gone: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc to find the workers")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killing_the_command_during_derivation_leaves_no_worker(sig):
    """`python -m codegen --check` derives the catalogue in one worker per core; signal it mid-way: every worker is
    gone within 5 s (SIGTERM, SIGINT: the parent kills them; SIGKILL: they notice their parent died)."""
    expected = min(len(CATALOGUE), os.cpu_count() or 1)
    env = dict(os.environ, **{TIMEOUT_ENV: "300"})
    proc = subprocess.Popen([sys.executable, "-m", "codegen", "--check"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        workers = []
        while len(workers) < expected and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            workers = _children(proc.pid)
        assert len(workers) == expected, f"expected {expected} workers of pid {proc.pid}, found {workers}"
        time.sleep(1.0)  # they are deriving now: the catalogue takes several seconds
        assert proc.poll() is None, "the derivation ended before the signal: nothing was tested"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        gone_by = time.monotonic() + 5
        while any(_alive(p) for p in workers) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert not [p for p in workers if _alive(p)], f"workers left running after {sig.name}"
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and "Traceback" not in stderr, stderr
        else:
            assert proc.returncode in (-sig, 128 + sig), proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(tmp_path):
    """A training script that derives at import level (no ``if __name__ == "__main__"``): the worker is a fresh
    Python that never imports the script, so its top level runs once."""
    script = tmp_path / "train.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nprint('top level ran', flush=True)\n"
                      "from codegen.build import derive_all\nfrom derive import Activation\n"
                      "from derive.parse import X\n"
                      "print([d.name for d in derive_all([Activation('a', X)], workers=1, timeout=60)])\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["top level ran", "['a']"]
