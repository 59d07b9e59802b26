"""The compiled loops that call BLAS for each step's product (BACKEND "numba_blas", chosen by "auto" for
NUMBA_MAX_WORK < N*H*H <= NUMBA_BLAS_MAX_WORK): same results as the NumPy loop, chosen where they should be, and
under the BLAS thread policy. Skipped, naming the extra, where Numba or SciPy is not installed."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba (the fast extra) is not installed: the compiled BLAS target is not tested")
pytest.importorskip("scipy", reason="SciPy (the fast extra) is not installed: the compiled BLAS target is not tested")

import generated  # noqa: E402
import generated._support as support  # noqa: E402
from tests.conftest import rnn_inputs  # noqa: E402

# f (and f' where it is kept) vectorise in Numba: arithmetic, selections and the support module's exp, expm1, log1p,
# tanh, erfc and ndtr; sin calls the math library one value at a time and keeps NumPy's forward
NOT_VECTORISED = {"sin"}


def _run(module, backend, args, dh):
    saved = module.BACKEND
    module.BACKEND = backend
    try:
        h, cache = module.forward(*args)
        return h.copy(), module.backward(dh, cache)
    finally:
        module.BACKEND = saved


@pytest.mark.parametrize("name", generated.ACTIVATIONS)
def test_the_compiled_blas_loops_give_the_numpy_loops_results(name):
    """Forward and every gradient of "numba_blas" against "numpy", float64, with W Fortran-ordered, h0 and dh
    strided views (the kernels make contiguous copies for np.dot): 1e-12 relative to each array's largest entry (the
    same operations, products by the same kind of BLAS kernel, sums possibly in another order: ~1e-15 measured)."""
    module = generated.load(name)
    x, h0, V, W, b = rnn_inputs(7, 3, 4, 6, seed=5)
    W = np.asfortranarray(W)
    h0 = np.repeat(h0, 2, axis=1)[:, ::2]
    dh = np.random.default_rng(6).standard_normal((7, 3, 12))[:, :, ::2]
    h_np, g_np = _run(module, "numpy", (x, h0, V, W, b), dh)
    h_nb, g_nb = _run(module, "numba_blas", (x, h0, V, W, b), dh)
    np.testing.assert_allclose(h_nb, h_np, rtol=0, atol=1e-12 * np.abs(h_np).max())
    for label, got, want in zip(("dx", "dh0", "dV", "dW", "db"), g_nb, g_np):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max(), err_msg=label)


@pytest.mark.parametrize("name, forward_compiled", [("relu", True), ("tanh", True), ("silu", True), ("gelu", True),
                                                     ("sin", False)])
def test_auto_takes_the_blas_loops_between_the_two_limits(name, forward_compiled, monkeypatch):
    """N*H*H = 4 * 256 * 256 = 2^18 is NUMBA_BLAS_MAX_WORK itself: "auto" runs _backward_blas, and _forward_blas
    where f vectorises (relu; tanh through the support module's tanh; silu, whose f' is kept, with it; gelu through
    its ndtr; sin calls the math library: NumPy's forward); one row more, 5 * 256 * 256, is past it and neither
    runs."""
    module = generated.load(name)
    assert module.NUMBA_MAX_WORK < 4 * 256 * 256 == module.NUMBA_BLAS_MAX_WORK
    assert hasattr(module, "_forward_blas") == (name not in NOT_VECTORISED) == forward_compiled
    calls = []
    for fn in ("_forward_blas", "_backward_blas"):
        if hasattr(module, fn):
            original = getattr(module, fn)
            monkeypatch.setattr(module, fn, lambda *a, _f=original, _n=fn: calls.append(_n) or _f(*a))
    monkeypatch.setattr(module, "BACKEND", "auto")
    for N, expected in ((4, (["_forward_blas"] if forward_compiled else []) + ["_backward_blas"]), (5, [])):
        calls.clear()
        x, h0, V, W, b = rnn_inputs(2, N, 3, 256, seed=1)
        h, cache = module.forward(x, h0, V, W, b)
        module.backward(np.ones_like(h), cache)
        assert calls == expected, N


def test_numba_blas_without_scipy_says_what_to_install(monkeypatch):
    module = generated.load("relu")
    monkeypatch.setattr(support, "NUMBA_BLAS", False)
    monkeypatch.setattr(module, "BACKEND", "numba_blas")
    with pytest.raises(ImportError, match="pip install numba scipy"):
        module.forward(*rnn_inputs(2, 1, 2, 3))
    monkeypatch.setattr(module, "BACKEND", "auto")  # auto without SciPy: the NumPy loop, same results
    x, h0, V, W, b = rnn_inputs(3, 4, 5, 64, seed=1)
    module.forward(x, h0, V, W, b)


def test_the_thread_policy_governs_the_blas_the_compiled_loops_call():
    """The BLAS library Numba's np.dot calls (SciPy's) is loaded when generated._support is imported, so the thread
    policy, which lists the BLAS libraries once, governs it: running the compiled loops loads no BLAS it has not
    listed (a fresh process)."""
    pytest.importorskip("threadpoolctl", reason="threadpoolctl (the fast extra) is not installed: no thread policy")
    code = """if True:
        import numpy as np, threadpoolctl
        import generated, generated._support as s
        listed = {c.filepath for c in s._BLAS_LIMIT._controllers()}
        m = generated.load("relu")
        m.BACKEND = "numba_blas"
        rng = np.random.default_rng(0)
        x, h0, V, W, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((4, 8)), rng.standard_normal((8, 5)), \\
            rng.standard_normal((8, 8)) * 0.3, rng.standard_normal(8)
        h, cache = m.forward(x, h0, V, W, b)
        m.backward(np.ones_like(h), cache)
        now = {c.filepath for c in threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers}
        assert now <= listed, (now, listed)
        print(len(listed))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) >= 1
