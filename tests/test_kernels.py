"""The generated kernels: finite differences, an independent reference loop, the API contract."""
import importlib.util
import json

import numpy as np
import pytest

import generated
from codegen.build import build
from tests.conftest import off_kink_inputs, rnn_inputs
from verify import gradcheck

# float64 central differences with eps = 1e-6 resolve gradients to ~1e-9 relative (see verify/gradcheck.py):
# 1e-6 leaves two orders of margin and is missed by any wrong derivative term by far.
BOUND = 1e-6


def test_gradcheck_projection(kernel):
    args = off_kink_inputs(kernel, T=6, N=3, D=4, H=5)
    errors = gradcheck(kernel, *args, mode="projection", directions=4)
    assert max(errors.values()) < BOUND, errors


def test_gradcheck_entries(kernel):
    args = off_kink_inputs(kernel, T=5, N=2, D=2, H=3, seed=100)
    errors = gradcheck(kernel, *args, mode="entries")
    assert max(errors.values()) < BOUND, errors


def test_gradcheck_catches_a_wrong_backward():
    """The check has teeth: a kernel whose backward drops the recurrent term fails it by orders of magnitude."""
    tanh = generated.load("tanh")

    class Broken:
        NAME, KINKS, forward = "broken", (), staticmethod(tanh.forward)

        @staticmethod
        def backward(dh, cache):
            g = tanh.backward(dh, cache)
            return g._replace(dW=g.dW * 1.001)

    errors = gradcheck(Broken, *rnn_inputs(5, 2, 3, 4), mode="entries")
    assert errors["W"] > 1e-4 and errors["V"] < BOUND


def min_char_rnn_reference(x, h0, V, W, b, dh):
    """A plain loop in the style of Karpathy's min-char-rnn, written independently of the engine."""
    T = x.shape[0]
    hs = {-1: h0}
    for t in range(T):
        hs[t] = np.tanh(x[t] @ V.T + hs[t - 1] @ W.T + b)
    dV, dW, db = np.zeros_like(V), np.zeros_like(W), np.zeros_like(b)
    dx = np.zeros_like(x)
    dhnext = np.zeros_like(h0)
    for t in reversed(range(T)):
        dht = dh[t] + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dht  # backprop through tanh nonlinearity
        db += dhraw.sum(0)
        dV += dhraw.T @ x[t]
        dW += dhraw.T @ hs[t - 1]
        dx[t] = dhraw @ V
        dhnext = dhraw @ W
    return np.stack([hs[t] for t in range(T)]), (dx, dhnext, dV, dW, db)


@pytest.mark.parametrize("target", ["numpy", "numba"])
def test_tanh_matches_min_char_rnn_loop(target, monkeypatch):
    tanh = generated.load("tanh")
    if target == "numba" and tanh.numba is None:
        pytest.skip("Numba (the fast extra) is not installed: the compiled target is not tested")
    monkeypatch.setattr(tanh, "BACKEND", target)
    args = rnn_inputs(T=12, N=4, D=6, H=7, seed=3)
    dh = np.random.default_rng(4).standard_normal((12, 4, 7))
    h, cache = tanh.forward(*args)
    grads = tanh.backward(dh, cache)
    h_ref, grads_ref = min_char_rnn_reference(*args, dh)
    np.testing.assert_allclose(h, h_ref, rtol=1e-12, atol=1e-14)
    for name, got, want in zip(grads._fields, grads, grads_ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(kernel, dtype):
    args = rnn_inputs(4, 2, 3, 5, dtype=dtype)
    h, cache = kernel.forward(*args)
    grads = kernel.backward(np.ones_like(h), cache)
    assert h.dtype == dtype
    assert all(g.dtype == dtype for g in grads), [g.dtype for g in grads]
    assert kernel.jacobian(cache, 2).dtype == dtype


def test_shapes(module):
    T, N, D, H = 4, 2, 3, 5
    h, cache = module.forward(*rnn_inputs(T, N, D, H))
    g = module.backward(np.ones_like(h), cache)
    assert h.shape == (T, N, H)
    assert (g.dx.shape, g.dh0.shape, g.dV.shape, g.dW.shape, g.db.shape) == ((T, N, D), (N, H), (H, D), (H, H), (H,))
    assert isinstance(g, generated.Grads)
    assert module.jacobian(cache, 1).shape == (N, H, H)


def test_backward_leaves_the_cache_intact(kernel):
    h, cache = kernel.forward(*rnn_inputs(4, 2, 3, 5))
    saved = [None if a is None else a.copy() for a in cache]
    kernel.backward(np.ones_like(h), cache)
    for before, after in zip(saved, cache):
        assert (before is None and after is None) or np.array_equal(before, after)


def test_step_functions_agree_with_the_sequence(kernel):
    x, h0, V, W, b = rnn_inputs(3, 2, 3, 4, seed=5)
    h, cache = kernel.forward(x, h0, V, W, b)
    h_prev = h0
    for t in range(3):
        h_t, _ = kernel.step_forward(x[t], h_prev, V, W, b)
        np.testing.assert_allclose(h_t, h[t], rtol=1e-13, atol=1e-15)
        h_prev = h_t
    dh_t = np.random.default_rng(6).standard_normal((2, 4))
    h1, c1 = kernel.step_forward(x[0], h0, V, W, b)
    g1 = kernel.step_backward(dh_t, c1)
    gs = kernel.backward(dh_t[None], kernel.forward(x[:1], h0, V, W, b)[1])
    np.testing.assert_allclose(g1.dx, gs.dx[0])
    np.testing.assert_allclose(g1.dh0, gs.dh0)
    assert g1.dx.shape == (2, 3)


def test_jacobian_matches_finite_differences(module):
    """dh_t/dh_{t-1} from the kernel against central differences of one step, entry by entry."""
    x, h0, V, W, b = off_kink_inputs(module, 3, 2, 3, 4, seed=7)
    h, cache = module.forward(x, h0, V, W, b)
    t = 2
    J = module.jacobian(cache, t)
    eps = 1e-6
    for n in range(2):
        for j in range(4):
            e = np.zeros_like(h0)
            e[n, j] = eps
            plus, _ = module.step_forward(x[t - 1], h[t - 2] + e, V, W, b)
            minus, _ = module.step_forward(x[t - 1], h[t - 2] - e, V, W, b)
            fd = (plus[n] - minus[n]) / (2 * eps)
            np.testing.assert_allclose(J[n, :, j], fd, rtol=1e-6, atol=1e-9)


def test_load_and_activations():
    assert "tanh" in generated.ACTIVATIONS and len(generated.ACTIVATIONS) >= 14
    assert generated.load("tanh").NAME == "tanh"
    with pytest.raises(ValueError, match="unknown activation 'nope'; known: identity, tanh"):
        generated.load("nope")


def test_module_constants(module):
    assert isinstance(module.EXPRESSION, str) and "x" in module.EXPRESSION
    assert isinstance(module.DERIVATIVE, str)
    assert module.USES_OUTPUT == (module.DERIVATIVE_FROM_OUTPUT is not None)
    assert module.forward.__doc__ and module.backward.__doc__
    assert "diag(" in module.__doc__


def _load_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def custom_tree(tmp_path_factory):
    """The engine run on a user catalogue holding two parsed expressions, into a scratch tree."""
    root = tmp_path_factory.mktemp("gen")
    user = root / "user.json"
    user.write_text(json.dumps({"mish_typed": "x*tanh(log(1+exp(x)))", "bent": "(sqrt(x**2 + 1) - 1)/2 + x"}))
    build(root / "generated", user, workers=1)
    return root / "generated"


@pytest.mark.parametrize("name", ["mish_typed", "bent"])
def test_parsed_expression_kernels_pass_gradcheck(custom_tree, name):
    mod = _load_file(custom_tree / f"rnn_{name}.py", f"custom_{name}")
    errors = gradcheck(mod, *rnn_inputs(6, 3, 4, 5, seed=11), mode="projection", directions=4)
    assert max(errors.values()) < BOUND, errors
    errors = gradcheck(mod, *rnn_inputs(5, 2, 2, 3, seed=12), mode="entries")
    assert max(errors.values()) < BOUND, errors


def test_typed_mish_equals_catalogue_mish(custom_tree):
    typed = _load_file(custom_tree / "rnn_mish_typed.py", "custom_mish_typed_eq")
    args = rnn_inputs(5, 2, 3, 4)
    h1, c1 = typed.forward(*args)
    h2, c2 = generated.load("mish").forward(*args)
    np.testing.assert_allclose(h1, h2, rtol=1e-14)


def test_jacobian_products_agree_with_backward(kernel):
    """Row k of P = dh_t/dh_k pulls u back exactly as backward does for L = <u, h_t> started at h_k (1e-10)."""
    T, N, D, H = 7, 3, 4, 5
    x, h0, V, W, b = rnn_inputs(T, N, D, H, seed=21)
    h, cache = kernel.forward(x, h0, V, W, b)
    u = np.random.default_rng(22).standard_normal((N, H))
    t = 6
    P = kernel.jacobian_products(cache, t)
    assert P.shape == (t, N, H, H)
    for k in range(t):
        h_k = h0 if k == 0 else h[k - 1]
        _, tail = kernel.forward(x[k:t], h_k, V, W, b)
        dh = np.zeros((t - k, N, H))
        dh[-1] = u
        expected = kernel.backward(dh, tail).dh0
        scale = np.max(np.abs(expected))
        assert np.max(np.abs(np.einsum("ni,nij->nj", u, P[k]) - expected)) <= 1e-10 * scale
        assert np.max(np.abs(kernel.pullback(cache, u, t, k) - expected)) <= 1e-10 * scale
    v = np.random.default_rng(23).standard_normal((N, H))
    for k in range(t):
        pushed = kernel.pushforward(cache, v, k, t)
        direct = np.einsum("nij,nj->ni", P[k], v)
        assert np.max(np.abs(pushed - direct)) <= 1e-10 * np.max(np.abs(direct))


def test_pushforward_matches_finite_differences(module):
    """(dh_t/dh_k) v against the central difference of the forward map h_k -> h_t."""
    x, h0, V, W, b = off_kink_inputs(module, 6, 2, 3, 4, seed=31)
    h, cache = module.forward(x, h0, V, W, b)
    v = np.random.default_rng(32).standard_normal((2, 4))
    k, t, eps = 2, 6, 1e-6
    plus, _ = module.forward(x[k:t], h[k - 1] + eps * v, V, W, b)
    minus, _ = module.forward(x[k:t], h[k - 1] - eps * v, V, W, b)
    fd = (plus[-1] - minus[-1]) / (2 * eps)
    np.testing.assert_allclose(module.pushforward(cache, v, k, t), fd, rtol=1e-6, atol=1e-9)


def test_product_arguments_are_checked():
    tanh = generated.load("tanh")
    _, cache = tanh.forward(*rnn_inputs(4, 2, 3, 5))
    with pytest.raises(ValueError, match=r"k must be an integer in 0..t-1 = 0..2, got 3"):
        tanh.pullback(cache, np.zeros((2, 5)), 3, 3)
    with pytest.raises(ValueError, match=r"t must be an integer in 1..T = 1..4, got 5"):
        tanh.jacobian_products(cache, 5)


def test_jacobian_products_refuses_to_allocate_past_max_bytes():
    """t*N*H*H floats are checked before allocating: 1 GiB by default, max_bytes= to change it."""
    tanh = generated.load("tanh")
    assert tanh.JACOBIAN_MAX_BYTES == 2**30
    _, cache = tanh.forward(*rnn_inputs(4, 2, 3, 5))
    need = 4 * 2 * 5 * 5 * 8
    with pytest.raises(MemoryError, match=r"t\*N\*H\*H = 4\*2\*5\*5 float64 values, .* above max_bytes .*"
                                          r"pushforward / pullback"):
        tanh.jacobian_products(cache, 4, max_bytes=need - 1)
    assert tanh.jacobian_products(cache, 4, max_bytes=need).shape == (4, 2, 5, 5)
    # the README's large size, (T, N, H) = (100, 64, 512): 12.5 GiB (h is a broadcast view: nothing allocated)
    big = cache._replace(h=np.broadcast_to(np.zeros(1), (100, 64, 512)), h0=np.zeros((64, 512)))
    with pytest.raises(MemoryError, match=r"12\.50 GiB, above max_bytes = 1\.00 GiB"):
        tanh.jacobian_products(big, 100)
