"""The BLAS thread policy of the generated kernels (generated/_support.py: choose_blas_threads, blas_threads).

No timings here (machines are noisy; `python -m bench.threads` and `python -m bench --busy` measure): the policy's
choice, that every kernel call gives the BLAS back its thread count (on return, on an exception, with two threads
calling at once, in a forked child), and that the kernels compute the same without threadpoolctl.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import generated
from generated import _support
from generated._support import BLAS_FREE_MARGIN, BLAS_THREADED_MIN_WORK, blas_threads, choose_blas_threads

ROOT = Path(__file__).resolve().parents[1]
BIG = 10 * BLAS_THREADED_MIN_WORK  # a product large enough for the policy to consider


@pytest.mark.parametrize("largest_work, free, current, want", [
    (BIG, 1.0, 2, 1),  # one of two cores busy: one thread
    (BIG, 0.0, 2, 1),  # every core busy: still one
    (BIG, 2.0, 2, None),  # both free: the BLAS as it is
    (BIG, 2.0 - BLAS_FREE_MARGIN, 2, None),  # a core 75 % free still counts
    (BIG, 1.7, 2, 1),  # a core 70 % free does not
    (BIG, 6.5, 8, 6),
    (BIG, 12.0, 8, None),  # never more threads than the BLAS was set to
    (BIG, 1.0, 1, None),  # already one thread
    (BIG, None, 4, None),  # load unknown (not Linux): left alone
    (BLAS_THREADED_MIN_WORK, 0.0, 2, None),  # products BLAS runs on one thread anyway: left alone, no cost
])
def test_policy_choice(largest_work, free, current, want):
    assert choose_blas_threads(largest_work, free, current) == want


try:
    import threadpoolctl
except ImportError:  # the policy's choice above is tested all the same
    threadpoolctl = None


def blas_counts():
    return [lib.num_threads for lib in threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers]


@pytest.fixture
def one_core_free(monkeypatch):
    """The BLAS at 3 threads and the load reading 'one core free', so that the policy lowers the count to 1 for
    the duration of each call; yields the counts the BLAS must be given back."""
    if threadpoolctl is None:
        pytest.skip("threadpoolctl is not installed (pip install -e '.[test]')")
    monkeypatch.setattr(_support._BLAS_LIMIT, "free_cores", lambda: 1.0)
    with threadpoolctl.threadpool_limits(limits=3, user_api="blas"):
        before = blas_counts()
        assert max(before) == 3
        yield before
    assert _support._BLAS_LIMIT.depth == 0


@pytest.fixture
def calls(monkeypatch):
    """Counts of the policy's enter and leave (the real ones still run)."""
    counts = {"enter": 0, "leave": 0}
    limit = _support._BLAS_LIMIT
    enter, leave = limit.enter, limit.leave

    def counted_enter(work):
        counts["enter"] += 1
        return enter(work)

    def counted_leave():
        counts["leave"] += 1
        leave()

    monkeypatch.setattr(limit, "enter", counted_enter)
    monkeypatch.setattr(limit, "leave", counted_leave)
    return counts


def problem(T=20, N=16, D=32, H=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((T, N, D)), rng.standard_normal((N, H)) * 0.1,
            rng.standard_normal((H, D)) / np.sqrt(D), rng.standard_normal((H, H)) * 0.9 / np.sqrt(H),
            rng.standard_normal(H) * 0.1), rng.standard_normal((T, N, H))


def test_a_decorated_call_runs_on_one_thread_and_restores_the_count(one_core_free):
    seen = []

    @blas_threads("x", "W")
    def kernel(x, W):
        seen.append(blas_counts())
        return "done"

    x, W = np.zeros((100, 16, 64)), np.zeros((64, 64))
    assert kernel(x, W=W) == "done"
    assert seen == [[1] * len(one_core_free)] and blas_counts() == one_core_free


def test_the_count_is_restored_after_an_exception(one_core_free):
    @blas_threads("x", "W")
    def kernel(x, W):
        raise RuntimeError("inside the kernel")

    with pytest.raises(RuntimeError, match="inside the kernel"):
        kernel(np.zeros((100, 16, 64)), np.zeros((64, 64)))
    assert blas_counts() == one_core_free


@pytest.mark.parametrize("name", ["tanh", "gelu", "lstm", "gru"])
def test_forward_and_backward_go_through_the_policy_and_restore_it(name, one_core_free, calls):
    module = generated.load(name)
    if name in generated.CELLS:
        from bench.cells import problem as cell_problem

        args, G = cell_problem(name, 20, 16, 32, 64, np.float64)
    else:
        args, G = problem()
    h, cache = module.forward(*args)
    module.backward(G, cache)
    assert calls == {"enter": 2, "leave": 2} and blas_counts() == one_core_free
    with pytest.raises(ValueError, match="dh"):  # a wrong dh: backward raises inside the policy's limit
        module.backward(G[:, :3], cache)
    assert calls == {"enter": 3, "leave": 3} and blas_counts() == one_core_free


def test_small_problems_skip_the_policy(one_core_free, calls):
    module = generated.load("tanh")
    h, cache = module.forward(*problem(T=5, N=1, D=4, H=8)[0])
    module.backward(np.ones_like(h), cache)
    assert calls == {"enter": 0, "leave": 0}


def test_a_worker_threads_call_shares_the_main_threads_limit_and_leaves_the_count_alone(one_core_free, calls):
    """OpenBLAS ignores thread counts set from other threads than the main one: only the main thread lowers and
    restores, a worker's call during it runs on the lowered count, a worker's call alone leaves the BLAS as it is."""
    seen = {}

    @blas_threads("x", "W")
    def kernel(x, W, me):
        if me == "main":
            worker = threading.Thread(target=kernel, args=(x, W, "worker inside main"))
            worker.start()
            worker.join(10)
        seen[me] = blas_counts()

    x, W = np.zeros((100, 16, 64)), np.zeros((64, 64))
    kernel(x, W, "main")
    worker = threading.Thread(target=kernel, args=(x, W, "worker alone"))
    worker.start()
    worker.join(10)
    ones = [1] * len(one_core_free)
    assert seen == {"worker inside main": ones, "main": ones, "worker alone": one_core_free}
    assert calls == {"enter": 3, "leave": 1} and blas_counts() == one_core_free


def test_two_threads_calling_forward_and_backward_at_once(one_core_free):
    module = generated.load("tanh")
    args, G = problem()
    want = module.backward(G, module.forward(*args)[1])
    got, errors = [], []

    def work():
        try:
            for _ in range(10):
                got.append(module.backward(G, module.forward(*args)[1]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    worker = threading.Thread(target=work)
    worker.start()
    work()  # the main thread at the same time
    worker.join(60)
    assert not errors and len(got) == 20
    for grads in got:
        for a, b in zip(grads, want):
            np.testing.assert_array_equal(a, b)
    assert blas_counts() == one_core_free


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_during_a_call_gets_the_counts_from_before_it(one_core_free):
    """A worker thread forks (as a DataLoader may start its workers) while the main thread's call has the count
    lowered: the child starts with the counts from before that call, and its own calls restore them too."""
    module = generated.load("tanh")
    args, G = problem()
    status = {}

    def fork():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # JAX and PyTorch warn about forking a threaded process
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                counts = blas_counts()
                module.backward(G, module.forward(*args)[1])
                code = 0 if counts == one_core_free and blas_counts() == one_core_free else 2
            finally:
                os._exit(code)
        for _ in range(600):  # up to 60 s: the child needs well under a second
            finished, code = os.waitpid(pid, os.WNOHANG)
            if finished:
                status["exit"] = os.waitstatus_to_exitcode(code)
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status["exit"] = "hung"

    @blas_threads("x", "W")
    def kernel(x, W):
        status["parent during the call"] = blas_counts()
        worker = threading.Thread(target=fork)
        worker.start()
        worker.join(90)

    kernel(np.zeros((100, 16, 64)), np.zeros((64, 64)))
    assert status == {"parent during the call": [1] * len(one_core_free), "exit": 0}
    assert blas_counts() == one_core_free


class _Library:
    """A stand-in for one of threadpoolctl's library controllers; ``refuse`` makes set_num_threads raise."""

    def __init__(self, num_threads, refuse=False):
        self.num_threads, self.refuse, self.calls = num_threads, refuse, []

    def set_num_threads(self, n):
        self.calls.append(n)
        if self.refuse:
            raise RuntimeError("this BLAS cannot change its threads")
        self.num_threads = n


def test_a_library_that_refuses_the_change_leaves_every_count_as_it_was(monkeypatch):
    """Two BLAS libraries loaded, the second refuses set_num_threads: the first gets its count back at once, the call
    runs with the counts as they were, and nothing is left to restore."""
    limit = _support._BlasLimit()
    first, second = _Library(4), _Library(4, refuse=True)
    monkeypatch.setattr(limit, "libraries", [first, second])
    monkeypatch.setattr(limit, "free_cores", lambda: 1.0)
    assert limit.enter(BIG) is False
    assert (first.num_threads, second.num_threads) == (4, 4) and first.calls == [1, 4]
    assert limit.depth == 0 and limit.saved is None


def test_a_forked_child_looks_at_the_load_afresh(monkeypatch):
    """The parent's last look at the load counted its own CPU time; the child's os.times() starts from zero, so
    carrying that look over would make the child's first reading see the machine busier than it is."""
    limit = _support._BlasLimit()
    stale = limit.free_cores
    stale.free = 0.0
    limit.after_fork()
    assert limit.free_cores is not stale and limit.free_cores() is None  # unknown until one full interval passes


CHILD = """
import json, sys
import numpy as np
sys.modules["threadpoolctl"] = None  # the import in generated/_support.py fails as if it were not installed
import generated
from generated import _support
out = {"policy": _support._BLAS_LIMIT is not None,
       "wrapped": hasattr(generated.load("tanh").forward, "__wrapped__")}
for name in ("tanh", "lstm"):
    data = np.load(sys.argv[1] + f"/{name}-in.npz")
    arrays = [data[f"arr_{k}"] for k in range(len(data.files))]
    module = generated.load(name)
    grads = module.backward(arrays[-1], module.forward(*arrays[:-1])[1])
    np.savez(sys.argv[1] + f"/{name}-out.npz", *grads)
print(json.dumps(out))
"""


def test_without_threadpoolctl_the_kernels_run_as_before_with_the_same_results(tmp_path, one_core_free):
    from bench.cells import problem as cell_problem

    inputs = {"tanh": problem(), "lstm": cell_problem("lstm", 20, 16, 32, 64, np.float64)}
    for name, (args, G) in inputs.items():
        np.savez(tmp_path / f"{name}-in.npz", *args, G)
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"policy": False, "wrapped": False}
    for name, (args, G) in inputs.items():
        module = generated.load(name)
        grads = module.backward(G, module.forward(*args)[1])  # here on one BLAS thread (the fixture)
        plain = np.load(tmp_path / f"{name}-out.npz")
        assert len(plain.files) == len(grads)
        for k, g in enumerate(grads):
            # the same operations; only the BLAS's split of a product among threads may differ: 1e-12 relative
            # to the largest entry is ~10^4 float64 roundings, far below any change of algorithm
            want = plain[f"arr_{k}"]
            assert np.max(np.abs(np.asarray(g) - want)) <= 1e-12 * np.max(np.abs(want)), (name, k)


def test_the_benchmarks_floors_run_under_the_same_policy(one_core_free, calls):
    """The floor is "the products ours cannot avoid, on the same BLAS": on the same threads too, or beside a busy
    core it would time the stall that the policy spares ours."""
    from bench import cells
    from bench.peers import gemm_floor

    args, G = problem(T=100)
    gemm_floor(*args, G)(*args, G)
    cell_args, cell_G = cells.problem("lstm", 100, 16, 32, 64, np.float64)
    cells.gemm_floor("lstm", cell_args, cell_G)(cell_args, cell_G)
    assert calls == {"enter": 2, "leave": 2} and blas_counts() == one_core_free
