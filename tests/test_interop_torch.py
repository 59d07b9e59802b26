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
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size. Expected 3, got 7"):
        m(torch.randn(4, 2, 7))
    assert "nonlinearity='silu'" in repr(m)


def _pair(nonlinearity="tanh", batch_first=False):
    """nn.RNN and ours with the same float64 weights, and one input of shape (T, N, D) = (6, 3, 5)."""
    torch.manual_seed(1)
    ref = torch.nn.RNN(5, 4, nonlinearity=nonlinearity, batch_first=batch_first).double()
    ours = RNN(5, 4, activation=nonlinearity, batch_first=batch_first, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    return ref, ours, x.transpose(0, 1).contiguous() if batch_first else x


def _scale_output(out, rnn, x):
    out.mul_(2)


def _relu_output(out, rnn, x):
    torch.nn.functional.relu(out, inplace=True)


def _dropout_output(out, rnn, x):
    torch.nn.functional.dropout(out, p=0.5, training=True, inplace=True)


def _scale_weight(out, rnn, x):
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(2)


def _scale_input(out, rnn, x):
    with torch.no_grad():
        x.mul_(2)


# Each of these changes, between forward and backward, memory that the backward pass reads. nn.RNN raises for the
# weight and the input and (keeping copies) answers right for the output; ours must raise autograd's error for all
# five rather than return gradients computed from the changed memory (before the fix: dW off by 9 to 44).
@pytest.mark.parametrize("change", [_scale_output, _relu_output, _dropout_output, _scale_weight, _scale_input],
                         ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_in_place_change_before_backward_raises(change, nonlinearity):
    _, ours, x = _pair(nonlinearity)
    x.requires_grad_(True)
    out, _ = ours(x)
    change(out, ours, x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("activation", ["tanh", "gelu"])  # gelu: backward reads E as well as h
@pytest.mark.parametrize("change", [_scale_output, _scale_input], ids=lambda f: f.__name__.strip("_"))
def test_functional_in_place_change_raises(activation, change):
    x, h0, V, W, b = (torch.tensor(a, requires_grad=True) for a in rnn_inputs(5, 2, 3, 4, seed=2))
    out = rnn(x, h0, V, W, b, activation=activation)
    change(out, None, x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_changed_batch_first_input_leaves_gradients_of_the_forward_that_ran():
    """batch_first transposes into a copy, so a later in-place change of the caller's tensor cannot reach backward:
    the gradients are nn.RNN's for the input as it was at forward (nn.RNN itself raises here)."""
    ref, ours, x = _pair(batch_first=True)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out1, _ = ref(x1)
    out2, _ = ours(x2)
    G = torch.randn_like(out1)
    with torch.no_grad():
        x2.mul_(2)
    (out1 * G).sum().backward()
    (out2 * G).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-12)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(dict(ours.named_parameters())[name].grad, p.grad, rtol=1e-10, atol=1e-12)


def test_backward_twice_with_retained_graph_gives_the_same_gradients():
    """backward reads only what forward saved, and changes none of it: a second pass gives the same answer."""
    x, h0, V, W, b = (torch.tensor(a, requires_grad=True) for a in rnn_inputs(5, 2, 3, 4, seed=3))
    out = rnn(x, h0, V, W, b, activation="gelu")
    first = torch.autograd.grad(out.sum(), (x, h0, V, W, b), retain_graph=True)
    second = torch.autograd.grad(out.sum(), (x, h0, V, W, b))
    for a, c in zip(first, second):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
