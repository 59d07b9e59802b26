"""What forward returns is a read-only view of the array its cache keeps, so no in-place change can reach backward.

The output h (RNN) or the output state sequence (cells) is the memory backward and the Jacobian functions read.
Writing into the returned array must raise NumPy's "... is read-only" ValueError, leave the
gradients bit for bit as they were, and ``.copy()`` must give a writeable array. The PyTorch front ends build their
tensors from the cache's writeable array, so torch never warns about a non-writeable NumPy array.
"""
import contextlib
import warnings

import numpy as np
import pytest

import generated
from tests.conftest import rnn_inputs

try:
    import numba  # noqa: F401 - only whether the compiled target can be forced
    BACKENDS = ("numpy", "numba")
except ImportError:
    BACKENDS = ("numpy",)

READ_ONLY = "(assignment destination|output array) is read-only"  # NumPy's words: item stores, ufuncs
T, N, D, H = 4, 3, 2, 5


def in_place_writes(a):
    """The in-place changes a user might make to an output (each must be refused)."""
    def scale():
        nonlocal a
        a *= 2  # the augmented assignment writes into a's memory (and would rebind a to the same array)

    def store():
        a[0, 0, 0] = 7.0

    def ufunc_out():
        np.maximum(a, 0, out=a)

    def fill():
        a.fill(0)

    return {"*=": scale, "[] =": store, "out=": ufunc_out, "fill": fill}


@pytest.fixture(params=BACKENDS)
def rnn(request, module):
    """Each activation's module with BACKEND forced to each target (NumPy, and Numba where installed)."""
    saved = module.BACKEND
    module.BACKEND = request.param
    yield module
    module.BACKEND = saved


def grads_of(module, args, dh):
    h, cache = module.forward(*args)
    return module.backward(dh, cache)


@pytest.mark.parametrize("for_backward", [True, False], ids=["for_backward", "inference"])
def test_rnn_forward_output_is_read_only(rnn, for_backward):
    h, cache = rnn.forward(*rnn_inputs(T, N, D, H), for_backward=for_backward)
    before = h.copy()
    for how, write in in_place_writes(h).items():
        with pytest.raises(ValueError, match=READ_ONLY):
            write()
    np.testing.assert_array_equal(cache.h, before)  # no write got through, not even a partial one
    assert not h.flags.writeable and cache.h.flags.writeable  # backward's own array stays the cache's
    assert np.shares_memory(h, cache.h)  # a view, not a copy: returning it costs nothing
    copy = h.copy()
    assert copy.flags.writeable
    copy *= 2
    np.testing.assert_array_equal(cache.h, before)


def test_rnn_step_forward_output_is_read_only(rnn):
    x, h0, V, W, b = rnn_inputs(1, N, D, H)
    h_t, cache = rnn.step_forward(x[0], h0, V, W, b)
    assert h_t.shape == (N, H)
    with pytest.raises(ValueError, match=READ_ONLY):
        h_t += 1
    assert h_t.copy().flags.writeable


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rnn_gradients_survive_an_attempted_write(rnn, dtype):
    """backward after a refused ``h *= 2`` gives exactly the gradients of an untouched run (dW reads h_1..h_{T-1}
    for every activation, and f' is taken from h where USES_OUTPUT, so a write that got through would change
    them)."""
    args = rnn_inputs(T, N, D, H, dtype=dtype, seed=1)
    dh = np.random.default_rng(2).standard_normal((T, N, H)).astype(dtype)
    expected = grads_of(rnn, args, dh)
    h, cache = rnn.forward(*args)
    with contextlib.suppress(ValueError):
        h *= 2
    got = rnn.backward(dh, cache)
    for name, g, e in zip(got._fields, got, expected):
        np.testing.assert_array_equal(g, e, err_msg=name)
    J = rnn.jacobian(cache, T)
    np.testing.assert_array_equal(J, rnn.jacobian(rnn.forward(*args)[1], T))


@pytest.fixture(params=generated.CELLS)
def cell(request):
    return generated.load(request.param)


def cell_args(module, T=T, seed=0):
    """Random arguments in forward's order, sized from the module's SHAPES."""
    rng = np.random.default_rng(seed)
    sizes = {"T": T, "N": N, "D": D, "H": H}
    out = []
    for name in module.ARGUMENTS:
        shape = tuple((int(c) if c else 1) * sizes[s] for c, _, s in (l.rpartition("*") for l in module.SHAPES[name]))
        out.append(rng.standard_normal(shape) * (1.0 if name == module.INPUT or name.endswith("0") else 0.5))
    return out


def test_cell_forward_output_is_read_only(cell):
    out, cache = cell.forward(*cell_args(cell))
    kept = getattr(cache, cell.OUTPUT)
    before = out.copy()
    for how, write in in_place_writes(out).items():
        with pytest.raises(ValueError, match=READ_ONLY):
            write()
    np.testing.assert_array_equal(kept, before)
    assert not out.flags.writeable and kept.flags.writeable
    assert np.shares_memory(out, kept)
    assert out.copy().flags.writeable


def test_cell_step_forward_output_is_read_only(cell):
    x, *rest = cell_args(cell, T=1)
    out_t, cache = cell.step_forward(x[0], *rest)
    assert out_t.shape == (N, H)
    with pytest.raises(ValueError, match=READ_ONLY):
        out_t += 1
    assert out_t.copy().flags.writeable


def test_cell_gradients_survive_an_attempted_write(cell):
    """backward after a refused ``out *= 2`` gives exactly the gradients of an untouched run (backward reads the
    output sequence as every step's previous state)."""
    args = cell_args(cell, seed=3)
    dout = np.random.default_rng(4).standard_normal((T, N, H))
    expected = cell.backward(dout, cell.forward(*args)[1])
    out, cache = cell.forward(*args)
    with contextlib.suppress(ValueError):
        out *= 2
    got = cell.backward(dout, cache)
    for name, g, e in zip(got._fields, got, expected):
        np.testing.assert_array_equal(g, e, err_msg=name)


# PyTorch ------------------------------------------------------------------------------------------------------------

@pytest.fixture
def torch_strict(monkeypatch):
    """torch with every warning raised as an error, and warn-once warnings ("The given NumPy array is not
    writable") given every time, so an earlier test cannot have used them up; every array torch.from_numpy
    receives is recorded."""
    torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: interop not tested")
    from interop import torch_rnn

    monkeypatch.setattr(torch_rnn, "BACKEND", "auto")
    seen = []
    real = torch.from_numpy
    monkeypatch.setattr(torch, "from_numpy", lambda a: seen.append(a.flags.writeable) or real(a))
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield torch, torch_rnn, seen
    finally:
        torch.set_warn_always(always)


@pytest.mark.parametrize("activation", ["tanh", "silu"])  # f' from h, and f' kept by forward (dh_dE)
def test_torch_rnn_builds_tensors_from_writeable_arrays(torch_strict, activation):
    torch, torch_rnn, seen = torch_strict
    x, h0, V, W, b = (torch.tensor(a, requires_grad=True) for a in rnn_inputs(T, N, D, H, seed=5))
    out = torch_rnn.rnn(x, h0, V, W, b, activation=activation)
    out.sum().backward()
    assert seen and all(seen), seen
    # autograd's guard is unchanged: an in-place change of the output before backward is refused
    out = torch_rnn.rnn(x, h0, V, W, b, activation=activation)
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_cells_build_tensors_from_writeable_arrays(torch_strict, kind):
    torch, torch_rnn, seen = torch_strict
    if kind.lower() not in generated.CELLS:
        pytest.fail(f"generated has no {kind.lower()} cell")
    torch.manual_seed(0)
    m = getattr(torch_rnn, kind)(D, H, dtype=torch.float64)
    out, _ = m(torch.randn(T, N, D, dtype=torch.float64))
    out.sum().backward()
    assert seen and all(seen), seen
    out, _ = m(torch.randn(T, N, D, dtype=torch.float64))
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
