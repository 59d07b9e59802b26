"""The front ends run the kernels' inference path (``forward(..., for_backward=False)``: h alone, f'(E_t) not
computed) when no gradient will be taken, and the training path otherwise, with the same h bit for bit.

The kernel module's ``forward`` is replaced by a spy that records ``for_backward`` and calls the real one."""
import numpy as np
import pytest

import generated
from tests.conftest import rnn_inputs

# gelu keeps f'(E_t) (the case the inference path saves work for); tanh takes f' from h (both paths the same work)
ACTIVATIONS = ["gelu", "tanh"]


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))


def _spy(monkeypatch, name):
    """The list that receives each call's for_backward (the kernels' default, True, when not passed)."""
    module = generated.load(name)
    calls = []
    real = module.forward

    def forward(*args, for_backward=True):
        calls.append(for_backward)
        return real(*args, for_backward=for_backward)

    monkeypatch.setattr(module, "forward", forward)
    return calls


# --- PyTorch ------------------------------------------------------------------------------------------------------

def _tensors(requires_grad, seed=3):
    torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed")
    return [torch.tensor(a, requires_grad=requires_grad) for a in rnn_inputs(6, 3, 4, 5, seed=seed)]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("how", ["no_grad", "inference_mode", "no_requires_grad"])
def test_torch_rnn_without_gradient_runs_the_inference_path(monkeypatch, activation, how):
    torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed")

    from interop.torch_rnn import rnn

    calls = _spy(monkeypatch, activation)
    trained = rnn(*_tensors(True), activation=activation)
    assert calls == [True]
    if how == "no_requires_grad":
        h = rnn(*_tensors(False), activation=activation)
    else:
        with getattr(torch, how)():
            h = rnn(*_tensors(True), activation=activation)
    assert calls == [True, False]
    assert not h.requires_grad
    assert torch.equal(h, trained.detach())  # bit for bit


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_torch_rnn_with_gradient_keeps_the_training_path_and_its_backward(monkeypatch, activation):
    torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed")

    from interop.torch_rnn import rnn

    calls = _spy(monkeypatch, activation)
    args = _tensors(False)
    args[2].requires_grad_()  # one input requiring grad is enough
    h = rnn(*args, activation=activation)
    assert calls == [True]
    G = torch.tensor(np.random.default_rng(4).standard_normal(tuple(h.shape)))
    (h * G).sum().backward()
    module = generated.load(activation)
    _, cache = module.forward(*(a.detach().numpy() for a in args), for_backward=True)
    want = module.backward(G.numpy(), cache)
    assert torch.equal(args[2].grad, torch.from_numpy(want[2]))  # the same kernels on the same data


def test_torch_module_under_no_grad_runs_every_layer_and_direction_on_the_inference_path(monkeypatch):
    torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed")

    from interop.torch_rnn import RNN

    calls = _spy(monkeypatch, "gelu")
    torch.manual_seed(0)
    model = RNN(4, 5, 2, nonlinearity="gelu", bidirectional=True, dtype=torch.float64)
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    out, h_n = model(x)  # parameters require grad: the training path
    assert calls == [True] * 4
    with torch.no_grad():
        out2, h_n2 = model(x)
    assert calls == [True] * 4 + [False] * 4
    assert torch.equal(out2, out.detach()) and torch.equal(h_n2, h_n.detach())
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("requires_grad", [False, True])
def test_torch_function_applied_directly_decides_from_its_inputs(monkeypatch, requires_grad):
    pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed")
    from interop.torch_rnn import RNNFunction

    calls = _spy(monkeypatch, "gelu")
    RNNFunction.apply(*_tensors(requires_grad), generated.load("gelu"))
    assert calls == [requires_grad]


# --- JAX ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_jax_primal_runs_the_inference_path_and_the_gradient_the_training_path(monkeypatch, activation):
    jax = pytest.importorskip("jax", reason="JAX (the bench extra) is not installed")
    import jax.numpy as jnp

    from interop.jax_rnn import make_rnn

    calls = _spy(monkeypatch, activation)
    f = make_rnn(activation)
    args = tuple(jnp.asarray(a.astype(np.float32)) for a in rnn_inputs(6, 3, 4, 5, seed=3))
    h = f(*args)
    assert calls == [False]
    h_jit = jax.jit(f)(*args)
    assert calls == [False, False]
    h_vjp, pullback = jax.vjp(f, *args)
    assert calls == [False, False, True]
    assert np.array_equal(np.asarray(h), np.asarray(h_vjp)) and np.array_equal(np.asarray(h_jit), np.asarray(h_vjp))
    G = jnp.asarray(np.random.default_rng(4).standard_normal(h.shape).astype(np.float32))
    grads = pullback(G)
    module = generated.load(activation)
    _, cache = module.forward(*(np.asarray(a) for a in args))
    want = module.backward(np.asarray(G), cache)
    for got, w in zip(grads, want):
        assert np.array_equal(np.asarray(got), w)  # the same kernels on the same data


def test_jax_vmapped_primal_runs_the_inference_path(monkeypatch):
    jax = pytest.importorskip("jax", reason="JAX (the bench extra) is not installed")
    import jax.numpy as jnp

    from interop.jax_rnn import make_rnn

    calls = _spy(monkeypatch, "gelu")
    x, h0, V, W, b = (jnp.asarray(a.astype(np.float32)) for a in rnn_inputs(6, 3, 4, 5, seed=3))
    f = make_rnn("gelu")
    mapped = jax.vmap(f, in_axes=(0, None, None, None, None))(jnp.stack([x, 2 * x]), h0, V, W, b)
    assert calls == [False]
    # float32, and the mapped axis folded into the batch may block the products differently: a few ulps
    np.testing.assert_allclose(np.asarray(mapped[1]), np.asarray(f(2 * x, h0, V, W, b)), rtol=1e-5, atol=1e-6)
