"""The compiled target (Numba) against the NumPy target: the same derivation, the same numbers."""
import numpy as np
import pytest

import generated
from tests.conftest import off_kink_inputs, rnn_inputs
from verify import gradcheck

numba = pytest.importorskip("numba", reason="Numba is not installed: the compiled target is not tested")


@pytest.fixture
def backend(module):
    saved = module.BACKEND
    yield module
    module.BACKEND = saved


def run(module, backend, args, dh):
    module.BACKEND = backend
    h, cache = module.forward(*args)
    return h, module.backward(dh, cache)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_numba_and_numpy_targets_agree(backend, dtype, rtol):
    module = backend
    args = rnn_inputs(6, 3, 4, 5, dtype=dtype, seed=3)
    dh = np.random.default_rng(4).standard_normal((6, 3, 5)).astype(dtype)
    h1, g1 = run(module, "numpy", args, dh)
    h2, g2 = run(module, "numba", args, dh)
    assert h2.dtype == dtype and all(g.dtype == dtype for g in g2)
    np.testing.assert_allclose(h2, h1, rtol=rtol, atol=rtol)
    for name, a, b in zip(g1._fields, g2, g1):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)), err_msg=name)


def test_numba_target_passes_gradcheck(backend):
    module = backend
    module.BACKEND = "numba"
    args = off_kink_inputs(module, 6, 2, 3, 4, seed=9)
    errors = gradcheck(module, *args, mode="projection", directions=3)
    assert max(errors.values()) < 1e-6, errors


def test_auto_dispatch_picks_by_size(monkeypatch):
    tanh = generated.load("tanh")
    calls = []
    real = tanh._forward_loop
    monkeypatch.setattr(tanh, "_forward_loop", lambda *a: calls.append(1) or real(*a))
    tanh.forward(*rnn_inputs(3, 1, 2, 8))  # N*H*H = 64: compiled
    assert calls == [1]
    H = int(np.sqrt(tanh.NUMBA_MAX_WORK)) + 1
    tanh.forward(*rnn_inputs(3, 1, 2, H))  # past the limit: NumPy
    assert calls == [1]


def test_unknown_backend_is_refused(backend):
    backend.BACKEND = "fortran"
    refusal = "BACKEND must be one of 'auto', 'numpy', 'numba', 'numba_blas', 'numba_step', got 'fortran'"
    with pytest.raises(ValueError, match=refusal):
        backend.forward(*rnn_inputs(2, 1, 2, 3))
