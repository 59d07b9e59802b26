"""The PyTorch module and autograd Function over the generated kernels (an optional extra)."""
import pytest

from tests.conftest import rnn_inputs

torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: interop not tested")


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))


from interop.torch_rnn import RNN, rnn  # noqa: E402


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "mish", "x*tanh(log(1+exp(x))) + 0.1*x"])
def test_torch_function_passes_gradcheck(activation):
    x, h0, V, W, b = (torch.tensor(a, requires_grad=True) for a in rnn_inputs(5, 2, 3, 4, seed=2))
    assert torch.autograd.gradcheck(lambda *a: rnn(*a, activation=activation), (x, h0, V, W, b),
                                    eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_module_matches_nn_rnn(nonlinearity, batch_first):
    torch.manual_seed(0)
    ref = torch.nn.RNN(6, 8, nonlinearity=nonlinearity, batch_first=batch_first).double()
    ours = RNN(6, 8, activation=nonlinearity, batch_first=batch_first, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())  # the same parameter names
    shape = (3, 7, 6) if batch_first else (7, 3, 6)
    x1 = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    h0 = torch.randn(1, 3, 8, dtype=torch.float64)
    out1, hn1 = ref(x1, h0)
    out2, hn2 = ours(x2, h0)
    torch.testing.assert_close(out2, out1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hn2, hn1, rtol=1e-12, atol=1e-12)
    G = torch.randn_like(out1)
    ((out1 * G).sum() + hn1.sum()).backward()
    ((out2 * G).sum() + hn2.sum()).backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-12)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(dict(ours.named_parameters())[name].grad, p.grad, rtol=1e-10, atol=1e-12)


def test_module_float32_unbatched_and_errors():
    m = RNN(3, 5, activation="silu")
    out, hn = m(torch.randn(4, 3))
    assert out.shape == (4, 5) and hn.shape == (1, 5) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="input must have 3 features"):
        m(torch.randn(4, 2, 7))
    assert "activation='silu'" in repr(m)


